/**
 * The shutdown ladder shared by the launchers (`Machine.shutdown()`,
 * `StorageDaemon.shutdown()`): each step takes an action (a QMP command, a
 * signal) and waits for the process to exit within one budget, and is
 * recorded and logged whether it ended the process or not.
 *
 * @module
 */
import { type Duration, formatDuration, parseDuration } from "./duration.ts";
import { ConnectionClosedError, QmpError } from "./errors.ts";
import type { ShutdownStep } from "./machine.ts";

/** What a ladder needs of the process it stops. */
export interface LadderProcess {
  /** A name for log lines. */
  readonly name: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** Resolves once the process exited. */
  readonly exited: Promise<unknown>;
}

/** True once `proc` has exited, waiting at most `ms`. */
export async function exitedWithin(proc: LadderProcess, ms: number): Promise<boolean> {
  if (!proc.running) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([proc.exited.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Returns the step runner of a ladder: `step(name, timeout, action)` runs
 * `action(budget)` and waits for the exit within what is left of `timeout`,
 * pushes a {@link ShutdownStep} onto `steps`, logs it, and resolves `true`
 * when the process exited (at once when it was already gone).
 */
export function ladder(
  proc: LadderProcess,
  steps: ShutdownStep[],
  log: (message: string) => void,
): (
  name: ShutdownStep["step"],
  timeout: number,
  action: (budget: number) => Promise<unknown> | void,
) => Promise<boolean> {
  return async (name, timeout, action) => {
    if (!proc.running) return true;
    const t0 = performance.now();
    let note: string | undefined;
    try {
      await action(timeout);
    } catch (e) {
      note = e instanceof Error ? e.message : String(e);
    }
    const left = Math.max(0, timeout - (performance.now() - t0));
    const exited = await exitedWithin(proc, left);
    const ms = Math.round(performance.now() - t0);
    if (!exited) note ??= `still running after ${formatDuration(timeout)}`;
    steps.push({ step: name, ms, exited, ...(note ? { note } : {}) });
    log(`${proc.name}: ${name} → ${exited ? `exited in ${formatDuration(ms)}` : note}`);
    return exited;
  };
}

/**
 * Waits for `proc` to exit by itself, at most `timeout` when given; throws a
 * {@link QmpError} naming `proc` when it is still running then.
 */
export async function waitForExit(
  proc: LadderProcess & { readonly exited: Promise<Deno.CommandStatus> },
  timeout: Duration | undefined,
): Promise<Deno.CommandStatus> {
  if (timeout === undefined) return await proc.exited;
  const ms = parseDuration(timeout);
  if (await exitedWithin(proc, ms)) return await proc.exited;
  throw new QmpError(`${proc.name} did not exit within ${formatDuration(ms)}`);
}

/**
 * The ladder's last rungs, shared by both launchers: `quit` over QMP (while
 * `qmpOpen()`; a connection closed by the exit counts as done), then SIGTERM,
 * then SIGKILL (10 s), each step run by `step` (see {@link ladder}). Throws a
 * {@link QmpError} when the process survives SIGKILL.
 */
export async function quitThenSignal(
  proc: LadderProcess & { readonly pid: number },
  step: ReturnType<typeof ladder>,
  qmp: { readonly qmpOpen: () => boolean; readonly quit: (budget: number) => Promise<unknown> },
  signal: (sig: Deno.Signal) => void,
  options: { quitTimeout?: Duration; termTimeout?: Duration },
): Promise<void> {
  const done = (qmp.qmpOpen() &&
    await step("quit", parseDuration(options.quitTimeout ?? "5s"), async (budget) => {
      try {
        await qmp.quit(budget);
      } catch (e) {
        if (!(e instanceof ConnectionClosedError)) throw e;
      }
    })) ||
    await step("SIGTERM", parseDuration(options.termTimeout ?? "5s"), () => {
      signal("SIGTERM");
    }) ||
    await step("SIGKILL", 10_000, () => signal("SIGKILL"));
  if (!done) throw new QmpError(`${proc.name} (pid ${proc.pid}) survived SIGKILL`);
}
