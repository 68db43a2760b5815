/**
 * The shutdown ladder shared by the launchers (`Machine.shutdown()`,
 * `StorageDaemon.shutdown()`): each step takes an action (a QMP command, a
 * signal) and waits for the process to exit within one budget, and is
 * recorded and logged whether it ended the process or not.
 *
 * @module
 */
import { formatDuration } from "./duration.ts";
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
