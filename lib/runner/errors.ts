/**
 * Typed errors of the playbook runner. All extend {@link QmpError}.
 *
 * @module
 */
import { AbortError, QmpError, type QmpErrorOptions, TimeoutError } from "../errors.ts";

/**
 * An assertion failed: `t.expect(...)`, `t.expectEvent`, `t.expectError` or
 * `t.eventually`. Carries what was expected and what was found, and a readable diff.
 *
 * @example
 * ```ts ignore
 * try {
 *   t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "paused" });
 * } catch (e) {
 *   if (e instanceof ExpectationError) console.log(e.diff);
 * }
 * ```
 */
export class ExpectationError extends QmpError {
  /** The matcher that failed, e.g. `toMatchObject` or `not.toBe`. */
  readonly matcher: string;
  /** What was expected (the matcher's argument). */
  readonly expected: unknown;
  /** What was found. */
  readonly actual: unknown;
  /** A line diff of expected (`-`) against actual (`+`), when one helps. */
  readonly diff?: string;
  /** Creates an assertion failure. `message` is the one-line summary. */
  constructor(
    message: string,
    details: { matcher: string; expected?: unknown; actual?: unknown; diff?: string },
    options?: QmpErrorOptions,
  ) {
    super(message, options);
    this.name = "ExpectationError";
    this.matcher = details.matcher;
    this.expected = details.expected;
    this.actual = details.actual;
    this.diff = details.diff;
  }
}

/** A step (or `t.eventually`) ran longer than its timeout. `path` names the step. */
export class StepTimeoutError extends TimeoutError {
  /** The step path, outermost first (`["block", "backup"]`). */
  readonly path: readonly string[];
  /** Creates the error for the step at `path` whose `timeoutMs` expired. */
  constructor(path: readonly string[], timeoutMs: number, options?: QmpErrorOptions) {
    super(`Step "${path.join(" › ")}"`, timeoutMs, options);
    this.name = "StepTimeoutError";
    this.path = path;
  }
}

/** A whole playbook ran longer than its timeout (`meta.timeout` or `--timeout`). */
export class PlaybookTimeoutError extends TimeoutError {
  /** The playbook's name. */
  readonly playbook: string;
  /** Creates the error for `playbook` whose `timeoutMs` expired. */
  constructor(playbook: string, timeoutMs: number, options?: QmpErrorOptions) {
    super(`Playbook "${playbook}"`, timeoutMs, options);
    this.name = "PlaybookTimeoutError";
    this.playbook = playbook;
  }
}

/** The run was interrupted (Ctrl-C / SIGINT): `t.signal` is aborted with this reason. */
export class InterruptedError extends AbortError {
  /** Creates the error; `what` names the interruption (default: Ctrl-C). */
  constructor(what = "The run (Ctrl-C)", options?: QmpErrorOptions) {
    super(what, options);
    this.name = "InterruptedError";
  }
}

/**
 * A playbook used the runner API wrongly, e.g. `t.vm` while attached to an
 * existing VM with `--qmp`, or `t.step` after the playbook finished.
 */
export class PlaybookUsageError extends QmpError {
  /** Creates a usage error with an explanation of what to do instead. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "PlaybookUsageError";
  }
}

/** A playbook file could not be found, imported, or has no playbook as default export. */
export class PlaybookLoadError extends QmpError {
  /** The file that failed to load. */
  readonly file: string;
  /** Creates the error for `file`. */
  constructor(file: string, message: string, options?: QmpErrorOptions) {
    super(`${file}: ${message}`, options);
    this.name = "PlaybookLoadError";
    this.file = file;
  }
}

/**
 * Thrown by `t.step` when the step failed, so the steps after it do not run.
 * The step's own error is the `cause` and has already been reported.
 */
export class StepFailedError extends QmpError {
  /** The path of the step that failed. */
  readonly path: readonly string[];
  /** Creates the error for the failed step at `path`; `cause` is its error. */
  constructor(path: readonly string[], options?: QmpErrorOptions) {
    super(`Step "${path.join(" › ")}" failed`, options);
    this.name = "StepFailedError";
    this.path = path;
  }
}

/**
 * Blob reports cannot be read or merged: not a blob, another format or
 * runner version, a missing or duplicated shard. Says which file or shard.
 */
export class ReportMergeError extends QmpError {
  /** Creates the error; `message` says what is wrong and what to do. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "ReportMergeError";
  }
}

/**
 * A report cannot be written: its output directory (`--output DIR`) cannot
 * be created or is not writable. Says which directory and why.
 */
export class ReportOutputError extends QmpError {
  /** The output directory. */
  readonly dir: string;
  /** Creates the error for `dir`; `message` says what is wrong and what to do. */
  constructor(dir: string, message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "ReportOutputError";
    this.dir = dir;
  }
}

/**
 * Thrown by `t.skip(reason)`: the step that calls it, and the rest of the
 * playbook, are reported as skipped with `reason` (cleanups still run).
 */
export class PlaybookSkip extends QmpError {
  /** Why the playbook was skipped. */
  readonly reason: string;
  /** Creates the skip signal with its reason. */
  constructor(reason: string) {
    super(`skipped: ${reason}`);
    this.name = "PlaybookSkip";
    this.reason = reason;
  }
}
