/**
 * One bounded wait: settle with the operation, or reject with
 * {@link TimeoutError} when its timeout expires or {@link AbortError} when its
 * signal aborts, whichever comes first, cleaning up exactly once.
 *
 * @module
 */
import { type Duration, parseDuration } from "./duration.ts";
import { AbortError, TimeoutError } from "./errors.ts";
import { type LaneTimeout, scheduleTimeout, type TimeoutTarget } from "./timer_lanes.ts";
import { type AbortTarget, unwatchAbort, watchAbort } from "./abort_fanout.ts";

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
  if (signal?.aborted) {
    options.onGiveUp?.();
    return Promise.reject(new AbortError(nameOf(what), { cause: signal.reason }));
  }
  return new Promise<T>((resolve, reject) => {
    // One object per wait (its own timeout and abort target), not a closure each.
    const wait = new Wait(what, ms, signal, options, reject);
    if (ms !== undefined) wait.timer = scheduleTimeout(ms, wait);
    if (signal) watchAbort(signal, wait);
    const c = start(
      (value) => wait.finish() && resolve(value),
      (error) => wait.finish() && reject(error),
    );
    if (wait.settled) c?.(); // settled synchronously, before the cleanup was known
    else wait.cleanup = c;
  });
}

function nameOf(what: string | (() => string)): string {
  return typeof what === "string" ? what : what();
}

/** The state of one {@link boundedWait}. */
class Wait implements TimeoutTarget, AbortTarget {
  settled = false;
  cleanup: (() => void) | void = undefined;
  timer: LaneTimeout | undefined = undefined;
  readonly #what: string | (() => string);
  readonly #ms: number | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #options: BoundedWaitOptions;
  readonly #reject: (error: unknown) => void;

  constructor(
    what: string | (() => string),
    ms: number | undefined,
    signal: AbortSignal | undefined,
    options: BoundedWaitOptions,
    reject: (error: unknown) => void,
  ) {
    this.#what = what;
    this.#ms = ms;
    this.#signal = signal;
    this.#options = options;
    this.#reject = reject;
  }

  /** Marks the wait settled and cleans up; false when it already was. */
  finish(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.timer?.cancel();
    if (this.#signal) unwatchAbort(this.#signal, this);
    this.cleanup?.();
    return true;
  }

  timedOut(): void {
    this.timer = undefined;
    this.#giveUp(() =>
      new TimeoutError(nameOf(this.#what), this.#ms!, { hint: this.#options.hint?.() })
    );
  }

  aborted(): void {
    this.#giveUp(() => new AbortError(nameOf(this.#what), { cause: this.#signal!.reason }));
  }

  #giveUp(error: () => Error): void {
    if (!this.finish()) return;
    this.#options.onGiveUp?.();
    this.#reject(error());
  }
}
