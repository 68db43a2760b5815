/**
 * Secrets against the fake server and in process (faults QEMU does not
 * produce, sinks that need no QEMU): a reply nested 2,000 deep with a
 * transcript hook, a late reply to a timed-out `qom-get`, `--record` files
 * (mode 0600, created afresh), error classes and reporters given raw secrets.
 * Uses only long-standing API, so each test also runs against older code.
 */
import assert from "node:assert/strict";
import { connect, type TranscriptEntry } from "../lib/client.ts";
import { LaunchError, ProtocolError, QmpCommandError, type QmpError } from "../lib/errors.ts";
import { REDACTED } from "../lib/redact.ts";
import { runPlaybook } from "../lib/runner/engine.ts";
import { playbook } from "../lib/runner/playbook.ts";
import { createReporter } from "../lib/runner/reporters.ts";
import type { RunSummary } from "../lib/runner/results.ts";
import { startFakeServer } from "./helpers/fake_server.ts";

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0");

/** How deep `v` nests: `[[...]]` arrays, or `{a: {a: ...}}` objects. */
function depthOf(v: unknown): number {
  let d = 0;
  while (typeof v === "object" && v !== null) {
    v = Array.isArray(v) ? v[0] : (v as { a?: unknown }).a;
    d++;
  }
  return d;
}

Deno.test("a 2000-deep reply with a transcript hook: the caller gets it, the connection stays open", async () => {
  const DEPTH = 2000;
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const deep = await c.recv();
    // Arrays 2,000 deep overflowed the old recursive redactor; objects too, a little deeper.
    await c.write(
      `{"return": {"arrays": ${"[".repeat(DEPTH)}{"password": "t-deep-1"}${"]".repeat(DEPTH)}, ` +
        `"objects": ${'{"a": '.repeat(DEPTH * 4)}{"password": "t-deep-1"}${
          "}".repeat(DEPTH * 4)
        }}, ` +
        `"id": ${deep.id}}\r\n`,
    );
    await c.reply(await c.recv(), { status: "running", running: true });
    await c.eof;
  });
  const log: TranscriptEntry[] = [];
  const warnings: QmpError[] = [];
  await using client = await connect(server.address, {
    timeout: "5s",
    commandTimeout: "10s",
    transcript: (e) => log.push(e),
    onWarning: (w) => warnings.push(w),
  });
  const value = await client.executeRaw("query-deep") as { arrays: unknown; objects: unknown };
  assert.equal(depthOf(value.arrays), DEPTH + 1, "the caller gets the whole reply");
  assert.equal(depthOf(value.objects), DEPTH * 4 + 1);
  assert.equal(client.state, "open", `closed: ${client.closeError?.message}`);
  assert.deepEqual(await client.executeRaw("query-status"), { status: "running", running: true });
  assert.deepEqual(warnings.map((w) => w.message), []);
  const recorded = log.find((e) => e.direction === "recv" && e.message.id === 2);
  assert.ok(recorded, "the deep reply is in the transcript");
  // Past the redactor's bound (1024, QEMU's own parser limit) the copy is cut off
  // conservatively, so sinks can still serialize it; nothing crashes.
  const ret = recorded.message.return as { arrays: unknown; objects: unknown };
  assert.equal(depthOf(ret.arrays), 1022, "1024 levels counting the message and return");
  assert.equal(depthOf(ret.objects), 1022);
  assert.match(JSON.stringify(ret), /"<redacted: nested deeper than 1024 levels>"/);
  assert.ok(!JSON.stringify(log).includes("t-deep-1"), "and redacted at any depth");
});

Deno.test("a late reply to a timed-out qom-get of a secret is recorded redacted", async () => {
  const SECRET = "t-late-2";
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const get = await c.recv();
    const hmp = await c.recv();
    await new Promise((r) => setTimeout(r, 150)); // both time out on the client first
    await c.reply(get, SECRET);
    await c.reply(hmp, `"${SECRET}"\r\n`);
    await c.reply(await c.recv(), {});
    await c.eof;
  });
  const log: TranscriptEntry[] = [];
  await using client = await connect(server.address, {
    timeout: "5s",
    transcript: (e) => log.push(e),
    onWarning: () => {},
  });
  const get = client.executeRaw("qom-get", { path: "/objects/s0", property: "data" }, {
    timeout: 50,
  });
  const hmp = client.executeRaw("human-monitor-command", {
    "command-line": "qom-get /objects/s0 data",
  }, { timeout: 50 });
  await assert.rejects(get);
  await assert.rejects(hmp);
  await client.executeRaw("query-status"); // its reply comes after the late ones
  const ids = log.filter((e) =>
    e.direction === "send" && e.message.execute !== "query-status" &&
    e.message.execute !== "qmp_capabilities"
  ).map((e) => e.message.id);
  assert.equal(ids.length, 2);
  const late = log.filter((e) => e.direction === "recv" && ids.includes(e.message.id));
  assert.equal(late.length, 2, "both late replies are recorded");
  assert.deepEqual(late.map((e) => e.message.return), [REDACTED, REDACTED]);
  assert.ok(!JSON.stringify(log).includes(SECRET));
});

Deno.test("HMP object_add (JSON form), HMP qom-get and QMP qom-set are redacted in transcripts", async () => {
  const SECRETS = ["t-json-3", "t-hmpget-4", "t-qomset-5", "t-hmpset-6"];
  const received: Record<string, unknown>[] = [];
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    for (let i = 0; i < 4; i++) {
      const m = await c.recv();
      received.push(m);
      const line = (m.arguments as Record<string, unknown>)["command-line"];
      await c.reply(
        m,
        line === "qom-get /objects/s0 data"
          ? `"t-hmpget-4"\r\n`
          : m.execute === "qom-set"
          ? {}
          : "",
      );
    }
    await c.eof;
  });
  const log: TranscriptEntry[] = [];
  await using client = await connect(server.address, {
    timeout: "5s",
    transcript: (e) => log.push(e),
  });
  const hmp = (line: string) =>
    client.executeRaw("human-monitor-command", { "command-line": line });
  await hmp(`object_add {"qom-type":"secret","id":"s0","data":"t-json-3"}`);
  assert.equal(await hmp("qom-get /objects/s0 data"), `"t-hmpget-4"\r\n`, "the caller gets it");
  await client.executeRaw("qom-set", {
    path: "/objects/s0",
    property: "data",
    value: "t-qomset-5",
  });
  await hmp("qom-set /objects/s0 data t-hmpset-6");
  const text = JSON.stringify(log);
  for (const s of SECRETS) assert.ok(!text.includes(s), `transcript holds ${s}: ${text}`);
  // The server got the real values.
  assert.ok(JSON.stringify(received).includes("t-json-3"));
  assert.ok(JSON.stringify(received).includes("t-qomset-5"));
  const sent = log.filter((e) => e.direction === "send").map((e) => e.message);
  assert.deepEqual(sent[1].arguments, {
    "command-line": `object_add {"qom-type":"secret","id":"s0","data":"${REDACTED}"}`,
  });
  assert.deepEqual(sent[3].arguments, { path: "/objects/s0", property: "data", value: REDACTED });
});

Deno.test("--record file: mode 0600, created afresh, a planted symlink is not followed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-rec-test-" });
  try {
    const target = `${dir}/victim.txt`;
    await Deno.writeTextFile(target, "do not touch\n");
    await Deno.chmod(target, 0o644);
    const recordFile = `${dir}/pb.jsonl`;
    await Deno.symlink(target, recordFile);
    await using server = await startFakeServer(async (c) => {
      await c.handshake();
      await c.reply(await c.recv(), {});
      await c.eof;
    });
    const pb = playbook({ name: "pb" }, async (t) => {
      await t.qmp.execute("object-add", { "qom-type": "secret", id: "s0", data: "t-record-7" });
    });
    const result = await runPlaybook(pb, { qmp: server.address, recordFile });
    assert.equal(result.status, "passed", JSON.stringify(result.failure));
    const info = await Deno.lstat(recordFile);
    assert.equal(info.isSymlink, false, "the symlink was replaced by a regular file");
    assert.equal(octal(info.mode!), "0600");
    assert.equal(await Deno.readTextFile(target), "do not touch\n");
    const text = await Deno.readTextFile(recordFile);
    assert.ok(text.includes('"object-add"') && !text.includes("t-record-7"), text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errors never carry secrets: LaunchError (message, stderr, command line), QmpCommandError, ProtocolError", () => {
  const stderr = "qemu-system-x86_64: -object secret,id=s0,data=t-launch-8,bogus=1: " +
    "Invalid parameter 'bogus'";
  const launchError = new LaunchError(
    "qemu-system-x86_64 exited before its QMP monitor was ready",
    {
      exitCode: 1,
      stderr,
      commandLine: ["qemu-system-x86_64", "-object", "secret,id=s0,data=t-launch-8,bogus=1"],
    },
  );
  const shown = Deno.inspect(launchError, { depth: 5 }) + launchError.message + launchError.stderr +
    launchError.commandLine.join(" ");
  assert.ok(!shown.includes("t-launch-8"), shown);
  assert.ok(launchError.stderr.includes("Invalid parameter 'bogus'"), "the useful part is kept");
  const cmdError = new QmpCommandError(
    "object-add",
    { "qom-type": "secret", id: "s0", data: "t-cmd-9" },
    "GenericError",
    "attempt to add duplicate property 's0'",
  );
  const printed = Deno.inspect(cmdError, { depth: 5 });
  assert.ok(!printed.includes("t-cmd-9"), printed);
  assert.deepEqual(cmdError.arguments, { "qom-type": "secret", id: "s0", data: REDACTED });
  // A reply nobody asked for, quoted in a warning.
  const raw = '{"id": 99, "return": {"password": "t-proto-12"}}';
  const protocolError = new ProtocolError(`Discarded a reply with an unknown id 99: ${raw}`, {
    received: raw,
  });
  assert.ok(!Deno.inspect(protocolError).includes("t-proto-12"), Deno.inspect(protocolError));
});

Deno.test("reporters redact logs and failures given raw secrets (pretty, json, junit, tap)", async () => {
  const line = "vm: started pid 7: qemu-system-x86_64 -object secret,id=s0,data=t-report-10";
  const summary: RunSummary = {
    results: [{
      name: "pb",
      status: "failed",
      durationMs: 1,
      steps: [],
      failure: {
        name: "LaunchError",
        message: `failed: ${line}`,
        step: "(playbook)",
        causes: [line],
        transcript: [{
          time: "2026-01-01T00:00:00.000Z",
          vm: "vm",
          direction: "send",
          message: {
            execute: "set_password",
            arguments: { protocol: "vnc", password: "t-rep-11" },
          },
        }],
      },
      cleanupFailures: [],
      logs: [{ time: "2026-01-01T00:00:00.000Z", path: [], source: "vm", message: line }],
      kept: [],
    }],
    durationMs: 1,
    interrupted: false,
    counts: {
      playbooks: { passed: 0, failed: 1, skipped: 0, interrupted: 0, flaky: 0 },
      steps: { passed: 0, failed: 0, skipped: 0 },
    },
    ok: false,
  };
  for (const name of ["pretty", "json", "junit", "tap"] as const) {
    let out = "";
    const sink = { stdout: (t: string) => (out += t), stderr: (t: string) => (out += t) };
    const reporter = createReporter(name, { output: sink, color: false, live: false });
    const info = { index: 0, name: "pb" };
    reporter.runStart?.([{ name: "pb" }]);
    reporter.playbookStart?.(info);
    reporter.log?.(info, summary.results[0].logs[0]);
    reporter.playbookEnd?.(info, summary.results[0]);
    await reporter.runEnd(summary);
    assert.ok(out.includes("started pid 7"), `${name}: ${out}`);
    assert.ok(!out.includes("t-report-10") && !out.includes("t-rep-11"), `${name} leaks:\n${out}`);
  }
});
