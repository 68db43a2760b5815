/**
 * One bounded wait: settle with the operation, or reject with
 * {@link TimeoutError} when its timeout expires or {@link AbortError} when its
 * signal aborts, whichever comes first, cleaning up exactly once.
 *
 * @module
 */
import { type Duration, parseDuration } from "./duration.ts";
import { AbortError, TimeoutError } from "./errors.ts";
import { type LaneTimeout, scheduleTimeout } from "./timer_lanes.ts";
import { unwatchAbort, watchAbort } from "./abort_fanout.ts";

/** How long a wait may take, and what cancels it. */
export interface WaitBounds {
  /** Reject with {@link TimeoutError} after this long (default: no limit). */
  timeout?: Duration;
  /** Reject with {@link AbortError} when aborted. */
  signal?: AbortSignal;
}

/** Extras for {@link boundedWait}. */
export interface BoundedWaitOptions {
  /** Appended to the timeout message (computed when the timeout fires). */
  hint?: () => string;
  /** Runs when the wait gives up (timeout or abort), after cleanup. */
  onGiveUp?: () => void;
}

/**
 * Starts an operation with `start(resolve, reject)`; `start` returns a cleanup
 * function (e.g. removing a registered waiter) that runs exactly once however
 * the wait ends. `what` names the operation in error messages (a function is
 * called only when a message is needed). The timeout shares one runtime timer
 * with every other wait of the same duration (see `timer_lanes.ts`), so
 * thousands of concurrent waits are cheap to start and to end.
 */
export function boundedWait<T>(
  what: string | (() => string),
  bounds: WaitBounds,
  start: (resolve: (value: T) => void, reject: (error: unknown) => void) => (() => void) | void,
  options: BoundedWaitOptions = {},
): Promise<T> {
  const ms = bounds.timeout === undefined ? undefined : parseDuration(bounds.timeout);
  const signal = bounds.signal;
  const name = typeof what === "string" ? () => what : what;
  if (signal?.aborted) {
    options.onGiveUp?.();
    return Promise.reject(new AbortError(name(), { cause: signal.reason }));
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let cleanup: (() => void) | void;
    let timer: LaneTimeout | undefined;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      timer?.cancel();
      if (signal) unwatchAbort(signal, onAbort);
      cleanup?.();
      return true;
    };
    const giveUp = (error: () => Error) => {
      if (!finish()) return;
      options.onGiveUp?.();
      reject(error());
    };
    const onAbort = {
      aborted: () => giveUp(() => new AbortError(name(), { cause: signal!.reason })),
    };
    if (ms !== undefined) {
      timer = scheduleTimeout(ms, {
        timedOut: () => giveUp(() => new TimeoutError(name(), ms, { hint: options.hint?.() })),
      });
    }
    if (signal) watchAbort(signal, onAbort);
    const c = start((value) => finish() && resolve(value), (error) => finish() && reject(error));
    if (settled) c?.(); // settled synchronously, before the cleanup was known
    else cleanup = c;
  });
}
