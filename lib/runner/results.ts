/**
 * The result model of playbook runs: what one playbook run produced
 * ({@link PlaybookResult}, with its steps, failures, QMP transcript tails,
 * console tails, how QEMU died, and logs), and what a whole run produced
 * ({@link RunSummary}). Reporters (pretty, json, junit, tap, blob, html) are
 * driven from these alone; the blob format (`blob.ts`) is this model written
 * as JSON.
 *
 * @module
 */
import type { Machine } from "../machine.ts";

/** One QMP message of a playbook, as kept in failure reports and `--record` files. */
export interface TranscriptRecord {
  /** When it was sent or received (ISO 8601). */
  time: string;
  /** Which VM's connection: `vm` for the playbook's own, `vm2`... for `t.launch()` ones. */
  vm: string;
  /** The QMP address attached to with `--qmp` (`unix:/x`, `tls://host:port`, ...), if any. */
  address?: string;
  /** `send` (runner → QEMU) or `recv` (QEMU → runner). Secrets are already redacted. */
  direction: "send" | "recv";
  /** The message. */
  message: Record<string, unknown>;
}

/** A failure, flattened for reports (JSON-safe). */
export interface Failure {
  /** The error class name, e.g. `ExpectationError`, `StepTimeoutError`. */
  name: string;
  /** The error message. */
  message: string;
  /** The step path (`block › backup › job concludes`), `(playbook)`, `(load)` or `cleanup`. */
  step: string;
  /** The failing matcher, for assertion failures. */
  matcher?: string;
  /** The expected value, formatted, for assertion failures. */
  expected?: string;
  /** The actual value, formatted, for assertion failures. */
  actual?: string;
  /** A line diff of expected (`-`) against actual (`+`), when available. */
  diff?: string;
  /** The stack trace, when the error has one. */
  stack?: string;
  /** Messages of the error's `cause` chain. */
  causes: string[];
  /** The last QMP messages exchanged before the failure (oldest first). */
  transcript: TranscriptRecord[];
  /** The last lines of the launched VM's serial console, when it has one. */
  consoleTail?: string;
  /** How QEMU ended (`killed by SIGKILL; stderr: ...`), when it died during the playbook. */
  qemuExit?: string;
}

/** The outcome of one step. */
export interface StepResult {
  /** The step's name. */
  name: string;
  /** Its path, outermost first. */
  path: string[];
  /** `passed`, `failed` or `skipped` (declared `skip`, `--filter`, or `t.skip()`). */
  status: "passed" | "failed" | "skipped";
  /** Why it was skipped. */
  skipReason?: string;
  /** When it started, in ms since its playbook started (for timelines). */
  startMs?: number;
  /** How long it ran, in ms. */
  durationMs: number;
  /** The step's own failure; absent when only a nested step failed. */
  failure?: Failure;
  /** True when the step failed because a nested step failed. */
  nestedFailure?: boolean;
  /** Nested steps, in start order. */
  steps: StepResult[];
}

/** A line logged by the playbook (`t.log`), a VM lifecycle message or the runner. */
export interface LogEntry {
  /** When (ISO 8601). */
  time: string;
  /** Step path at the time (empty outside steps). */
  path: string[];
  /** Who logged it. */
  source: "playbook" | "vm" | "runner";
  /** The text. */
  message: string;
}

/** A VM left running by `--keep-vm` after a failure. */
export interface KeptVm {
  /** Its label (`vm`, `vm2`, ...). */
  label: string;
  /** QEMU's pid. */
  pid: number;
  /** The QMP socket path (nothing is connected to it any more). */
  socketPath: string;
  /** The guest agent's socket path, when the VM has one (nothing is connected to it either). */
  agentSocketPath?: string;
  /** The machine, so the runner can stop it later (absent in JSON reports and blobs). */
  machine?: Machine;
}

/**
 * A playbook's status: `passed`, `failed`, `skipped` (by `playbook.skip`,
 * `t.skip()`, tags, `--filter`, `--bail`...), `interrupted` (Ctrl-C), or
 * `flaky`: failed, then passed on a retry (`--retries`). A flaky playbook
 * does not fail the run.
 */
export type PlaybookStatus = "passed" | "failed" | "skipped" | "interrupted" | "flaky";

/**
 * The outcome of one playbook. With `--retries`, it is the outcome of the
 * last attempt, and `attempts` holds the earlier (failed) ones.
 */
export interface PlaybookResult {
  /** The playbook's name. */
  name: string;
  /** The file it came from (relative to the working directory when inside it), when known. */
  file?: string;
  /** The outcome; see {@link PlaybookStatus}. */
  status: PlaybookStatus;
  /** Why it was skipped. */
  skipReason?: string;
  /** The playbook's tags (`playbook({ tags })`). */
  tags?: string[];
  /** When this (last) attempt started (ISO 8601). */
  startedAt?: string;
  /** How long it ran, in ms (VM launch and shutdown included). */
  durationMs: number;
  /** Which attempt this is: 0 for the first run, 1 for the first retry... */
  retry?: number;
  /** With `--repeat-each N`: which repetition (0-based). */
  repeat?: number;
  /** Which parallel worker ran it (0-based; for timelines). */
  worker?: number;
  /** Earlier failed attempts (`--retries`), oldest first; each without its own `attempts`. */
  attempts?: PlaybookResult[];
  /** Top-level steps, in start order. */
  steps: StepResult[];
  /** A failure outside any step: loading, launching, or the body itself. */
  failure?: Failure;
  /** Cleanups that failed. */
  cleanupFailures: Failure[];
  /** Everything logged, in order. */
  logs: LogEntry[];
  /** VMs left running by `--keep-vm`. */
  kept: KeptVm[];
  /** The `--record` file, when recording. */
  recording?: string;
}

/** Identifies a playbook in observer callbacks. */
export interface PlaybookInfo {
  /** Position in the run (0-based). */
  index: number;
  /** The playbook's name. */
  name: string;
  /** The file it came from, when known. */
  file?: string;
  /** Which attempt (0 first run, 1 first retry, ...). */
  retry?: number;
  /** With `--repeat-each`: which repetition. */
  repeat?: number;
}

/** Live notifications of a run, for reporters. All optional. */
export interface RunObserver {
  /** A playbook starts. */
  playbookStart?(playbook: PlaybookInfo): void;
  /** A step starts. */
  stepStart?(playbook: PlaybookInfo, step: { name: string; path: string[] }): void;
  /** A step ended (passed, failed or skipped). */
  stepEnd?(playbook: PlaybookInfo, step: StepResult): void;
  /** Something was logged. */
  log?(playbook: PlaybookInfo, entry: LogEntry): void;
  /** A playbook attempt ended; with `--retries` a failed one may be followed by a retry. */
  playbookEnd?(playbook: PlaybookInfo, result: PlaybookResult): void;
}

/** Counts of a run, by playbook and by step. */
export interface RunCounts {
  /** Playbooks by (final) status. */
  playbooks: {
    passed: number;
    failed: number;
    skipped: number;
    interrupted: number;
    flaky: number;
  };
  /** Steps (nested ones included) of the final attempts, by status. */
  steps: { passed: number; failed: number; skipped: number };
}

/** `--shard INDEX/TOTAL`: this run is shard INDEX (1-based) of TOTAL. */
export interface ShardSpec {
  /** 1-based index. */
  index: number;
  /** Number of shards. */
  total: number;
}

/** The end of a run (or of merged shards), as given to reporters. */
export interface RunSummary {
  /** Every playbook's final result, in run order (merged: shard by shard). */
  results: PlaybookResult[];
  /** When the run started (ISO 8601); merged: the earliest shard's start. */
  startedAt?: string;
  /** Wall time of the run, in ms; merged: the longest shard's. */
  durationMs: number;
  /** True when the run was interrupted (Ctrl-C). */
  interrupted: boolean;
  /** What interrupted it, for messages (default `Ctrl-C`; e.g. `SIGTERM`). */
  interruptedBy?: string;
  /** Counts by status. */
  counts: RunCounts;
  /** True when every playbook passed, was flaky or skipped, and nothing was interrupted. */
  ok: boolean;
  /** The shard this run was (absent for an unsharded run or a merged report). */
  shard?: ShardSpec;
  /** Merged reports: the shards merged, in order. */
  shards?: ShardSpec[];
  /** The version of the runner that produced it. */
  runnerVersion?: string;
  /** Durations by playbook key (see `blob.ts`), for balancing shards next time. */
  timings?: Record<string, number>;
  /** Options of the run that shape its results. */
  config?: { retries: number; repeatEach: number; tags: string[]; parallel: number };
}

/** Counts results by status. */
export function countResults(results: readonly PlaybookResult[]): RunCounts {
  const counts: RunCounts = {
    playbooks: { passed: 0, failed: 0, skipped: 0, interrupted: 0, flaky: 0 },
    steps: { passed: 0, failed: 0, skipped: 0 },
  };
  const walk = (steps: readonly StepResult[]) => {
    for (const s of steps) {
      counts.steps[s.status]++;
      walk(s.steps);
    }
  };
  for (const r of results) {
    counts.playbooks[r.status]++;
    walk(r.steps);
  }
  return counts;
}

/** True when the results make a green run: nothing failed or was interrupted (flaky is green). */
export function resultsOk(counts: RunCounts): boolean {
  return counts.playbooks.failed === 0 && counts.playbooks.interrupted === 0;
}

/**
 * A copy of results safe for `JSON.stringify`: kept VMs without their machine
 * object, durations rounded to whole ms (attempts and nested steps too).
 */
export function jsonSafeResults(results: readonly PlaybookResult[]): PlaybookResult[] {
  const steps = (list: StepResult[]): StepResult[] =>
    list.map((s) => ({
      ...s,
      ...(s.startMs !== undefined ? { startMs: Math.round(s.startMs) } : {}),
      durationMs: Math.round(s.durationMs),
      steps: steps(s.steps),
    }));
  return results.map((r) => ({
    ...r,
    durationMs: Math.round(r.durationMs),
    steps: steps(r.steps),
    kept: r.kept.map(({ machine: _m, ...k }) => k),
    ...(r.attempts ? { attempts: jsonSafeResults(r.attempts) } : {}),
  }));
}
