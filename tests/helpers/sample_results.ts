/**
 * Test helper: a hand-made {@link RunSummary} with every status (passed,
 * failed, flaky with an earlier attempt, skipped, interrupted), nested steps
 * with start times, an assertion failure with a diff, a QMP transcript with a
 * secret in it, a console tail, a QEMU that died, logs, tags and shards.
 * For reporter tests that need no VM.
 *
 * @module
 */
import { countResults, type PlaybookResult, type RunSummary } from "../../lib/runner/results.ts";

/** The secret put into the sample's transcript (`set_password`): it must never be shown. */
export const SAMPLE_SECRET = "hunter2-s3cret";

/** A step name that would run script if it were not escaped. */
export const INJECTION = `<img src=x onerror=alert(1)>`;

const T0 = Date.parse("2026-11-29T10:00:00.000Z");
const at = (ms: number) => new Date(T0 + ms).toISOString();

/** The sample run summary; `big` adds long transcripts, console output and logs. */
export function sampleSummary(options: { big?: boolean } = {}): RunSummary {
  const transcriptLen = options.big ? 500 : 8;
  const transcript = Array.from({ length: transcriptLen }, (_, i) =>
    i % 2 === 0
      ? {
        time: at(1000 + i * 40),
        vm: "vm",
        direction: "send" as const,
        message: i === 2
          ? { execute: "set_password", arguments: { protocol: "vnc", password: SAMPLE_SECRET } }
          : { execute: "query-status", id: i },
      }
      : {
        time: at(1000 + i * 40 + 3),
        vm: "vm",
        direction: "recv" as const,
        message: i === transcriptLen - 1
          ? { event: "STOP", data: {}, timestamp: { seconds: 1, microseconds: 2 } }
          : { return: { status: "running", running: true, singlestep: false }, id: i - 1 },
      });
  const consoleLines = Array.from(
    { length: options.big ? 5000 : 12 },
    (_, i) =>
      `[    ${(i * 0.013).toFixed(6)}] boot line ${i}${i === 3 ? " \x1b[31mred\x1b[0m" : ""}`,
  );
  const failing: PlaybookResult = {
    name: "block: backup",
    file: "examples/block.playbook.ts",
    status: "failed",
    tags: ["block", "slow"],
    startedAt: at(0),
    durationMs: 4200,
    worker: 0,
    steps: [
      {
        name: "boots",
        path: ["boots"],
        status: "passed",
        startMs: 300,
        durationMs: 1500,
        steps: [],
      },
      {
        name: "backup",
        path: ["backup"],
        status: "failed",
        startMs: 1900,
        durationMs: 1800,
        nestedFailure: true,
        steps: [
          {
            name: "starts",
            path: ["backup", "starts"],
            status: "passed",
            startMs: 1950,
            durationMs: 600,
            steps: [],
          },
          {
            name: INJECTION,
            path: ["backup", INJECTION],
            status: "failed",
            startMs: 2600,
            durationMs: 1100,
            steps: [],
            failure: {
              name: "ExpectationError",
              message: `expected {status: "paused"} to match ${INJECTION}`,
              step: `backup › ${INJECTION}`,
              matcher: "toMatchObject",
              expected: '{\n  status: "paused",\n}',
              actual: '{\n  running: true,\n  status: "running",\n}',
              diff: [
                "- Expected",
                "+ Received",
                "",
                "  {",
                '-   status: "paused",',
                '+   status: "running",',
                "  }",
                "(only the keys in the pattern)",
              ].join("\n"),
              stack:
                "ExpectationError: x\n    at file:///work/a.ts:1:2\n    at file:///work/b.ts:3:4",
              causes: [],
              transcript,
              consoleTail: consoleLines.join("\n") + "\n",
            },
          },
        ],
      },
      {
        name: "after",
        path: ["after"],
        status: "skipped",
        skipReason: "an earlier step failed",
        durationMs: 0,
        steps: [],
      },
    ],
    cleanupFailures: [],
    logs: Array.from({ length: options.big ? 3000 : 3 }, (_, i) => ({
      time: at(100 + i),
      path: i % 2 ? ["backup"] : [],
      source: "playbook" as const,
      message: `log line ${i}`,
    })),
    kept: [],
  };
  const crashed: PlaybookResult = {
    name: "crash",
    file: "crash.playbook.ts",
    status: "failed",
    startedAt: at(500),
    durationMs: 1300,
    worker: 1,
    steps: [{
      name: "query after kill",
      path: ["query after kill"],
      status: "failed",
      startMs: 200,
      durationMs: 900,
      steps: [],
      failure: {
        name: "ConnectionClosedError",
        message: "The QMP connection closed while query-status was pending",
        step: "query after kill",
        causes: ["Error: socket closed"],
        transcript: transcript.slice(0, 2),
        qemuExit: "killed by SIGKILL; stderr:\nqemu-system-x86_64: terminating on signal 9",
      },
    }],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const attempt: PlaybookResult = {
    name: "hotplug",
    file: "examples/hotplug.playbook.ts",
    status: "failed",
    retry: 0,
    startedAt: at(2000),
    durationMs: 900,
    worker: 1,
    steps: [{
      name: "plug",
      path: ["plug"],
      status: "failed",
      startMs: 100,
      durationMs: 700,
      steps: [],
      failure: {
        name: "StepTimeoutError",
        message: 'Step "plug" timed out after 700ms',
        step: "plug",
        causes: [],
        transcript: [],
      },
    }],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const flaky: PlaybookResult = {
    ...attempt,
    status: "flaky",
    retry: 1,
    startedAt: at(3000),
    durationMs: 1000,
    steps: [{
      name: "plug",
      path: ["plug"],
      status: "passed",
      startMs: 100,
      durationMs: 800,
      steps: [],
    }],
    attempts: [attempt],
  };
  const passed: PlaybookResult = {
    name: "lifecycle",
    file: "examples/lifecycle.playbook.ts",
    status: "passed",
    startedAt: at(4300),
    durationMs: 1500,
    worker: 0,
    steps: [
      { name: "pause", path: ["pause"], status: "passed", startMs: 50, durationMs: 400, steps: [] },
      {
        name: "resume",
        path: ["resume"],
        status: "passed",
        startMs: 460,
        durationMs: 900,
        steps: [],
      },
    ],
    cleanupFailures: [],
    logs: [{ time: at(4400), path: [], source: "vm", message: `launched pid 42` }],
    kept: [],
  };
  const skipped: PlaybookResult = {
    name: "migration",
    file: "examples/migration.playbook.ts",
    status: "skipped",
    skipReason: "tag !slow",
    durationMs: 0,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const interrupted: PlaybookResult = {
    name: "snapshot",
    file: "examples/snapshot.playbook.ts",
    status: "interrupted",
    startedAt: at(5000),
    durationMs: 700,
    worker: 1,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const results = [failing, crashed, flaky, passed, skipped, interrupted];
  const counts = countResults(results);
  return {
    results,
    startedAt: at(0),
    durationMs: 5800,
    interrupted: false,
    counts,
    ok: false,
    shards: [{ index: 1, total: 2 }, { index: 2, total: 2 }],
    runnerVersion: "0.1.0",
    config: { retries: 1, repeatEach: 1, tags: [], parallel: 2 },
  };
}
