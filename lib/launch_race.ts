/**
 * The wait for a launched child's QMP monitor (`launch()`, `launchStorageDaemon()`),
 * raced against the child's exit, the deadline and the caller's signal, and the
 * one error that says which of them ended it.
 *
 * @module
 */
import { formatDuration } from "./duration.ts";
import { AbortError, LaunchError, TimeoutError } from "./errors.ts";
import { signalChild } from "./child_process.ts";

/** Watches a child for an exit before its monitor is ready. */
export interface EarlyExit {
  /** Aborted once the child exited (the process itself: its pipes may outlive it). */
  readonly signal: AbortSignal;
  /** The child's exit status once it exited, else `undefined`. */
  readonly status: Deno.CommandStatus | undefined;
}

/** Starts watching `child`: see {@link EarlyExit}. */
export function watchEarlyExit(child: Deno.ChildProcess): EarlyExit {
  const abort = new AbortController();
  const watch = { signal: abort.signal, status: undefined as Deno.CommandStatus | undefined };
  child.status.then((s) => {
    watch.status = s;
    abort.abort();
  });
  return watch;
}

/** What {@link launchFailure} needs to know about the launch that failed. */
export interface LaunchFailureContext {
  /** The child. */
  child: Deno.ChildProcess;
  /** Resolves once the child exited and was cleaned up. */
  exited: Promise<Deno.CommandStatus>;
  /** The watch started right after the spawn. */
  early: EarlyExit;
  /** The caller's signal, if any. */
  signal?: AbortSignal;
  /** The launch's name, its binary, its command line and its deadline. */
  name: string;
  /** The binary started. */
  binary: string;
  /** The full command line. */
  commandLine: string[];
  /** The launch's deadline, in ms. */
  timeoutMs: number;
  /** The child in messages: `"QEMU"`, `"the daemon"`. */
  who: string;
  /** What did not happen in time, e.g. `"did not connect to its QMP monitor"`. */
  timedOutAs: string;
  /** The monitor in messages: `"QMP monitor"`, `"QMP socket"`. */
  monitor: string;
  /** The child's output so far (read once it exited). */
  output: () => string;
}

/**
 * Kills the child unless it exited by itself, waits for it to be gone, and
 * returns the error for why the wait for its monitor failed (`cause`): an
 * {@link AbortError} when the caller's signal fired, else a {@link LaunchError}
 * for an early exit (with its exit code or signal), the deadline (with
 * `timeoutMs`) or a broken monitor; the child's output tail in either case.
 */
export async function launchFailure(cause: unknown, ctx: LaunchFailureContext): Promise<Error> {
  // Decide what happened before killing the child: once killed, it has "exited" too.
  const exitedEarly = ctx.early.status !== undefined;
  const aborted = !exitedEarly && ctx.signal?.aborted === true;
  const timedOut = !exitedEarly && !aborted && cause instanceof TimeoutError;
  if (!exitedEarly) signalChild(ctx.child, "SIGKILL");
  const status = await ctx.exited;
  const killed = `${ctx.who} (pid ${ctx.child.pid}) was killed`;
  if (aborted) {
    return new AbortError(`Launch of ${ctx.name} (${killed})`, { cause: ctx.signal!.reason });
  }
  const message = exitedEarly
    ? `${ctx.binary} exited before its QMP monitor was ready (` +
      (status.signal ? `signal ${status.signal}` : `exit code ${status.code}`) + ")"
    : timedOut
    ? `${ctx.name} ${ctx.timedOutAs} within ${formatDuration(ctx.timeoutMs)}; ${killed}`
    : `Cannot use ${ctx.name}'s ${ctx.monitor}: ` +
      `${cause instanceof Error ? cause.message : String(cause)}; ${killed}`;
  return new LaunchError(message, {
    exitCode: exitedEarly ? status.code : undefined,
    signal: exitedEarly ? status.signal ?? undefined : undefined,
    timeoutMs: timedOut ? ctx.timeoutMs : undefined,
    stderr: ctx.output().slice(-4000),
    commandLine: ctx.commandLine,
  }, { cause });
}
