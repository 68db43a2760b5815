/**
 * One-shot timers for the library's deadlines that do not load Deno's
 * Node-compatible timers. In Deno 2.9 the first access of the global
 * `setTimeout` or `clearTimeout` loads them (~7 ms: `op_lazy_load_esm`,
 * `async_wrap.ts`, `timers.mjs`), a third of what a one-shot `qmp exec` costs
 * above Deno's own start-up, although the handshake's deadline never fires.
 *
 * `AbortSignal.timeout()` runs on the runtime's own timers instead, and its
 * timer keeps the process alive only while the signal has an "abort"
 * listener: a timer here is such a signal with the callback as its listener,
 * and cancelling removes the listener. The runtime timer itself cannot be
 * cancelled: until it expires it holds the bare signal (~1 KiB), nothing
 * else, and does not keep the process alive. So that leftovers stay bounded,
 * only the first {@link SIGNAL_TIMERS} timers of a process take that path (a
 * one-shot `qmp exec` arms 2 to 4); later ones use the global `setTimeout`, whose
 * load a long-lived process pays once.
 *
 * @module
 */

/** How many timers per process run on `AbortSignal.timeout()`. */
export const SIGNAL_TIMERS = 16;

/** The longest delay `setTimeout` accepts (2^31-1 ms); see `duration.ts`. */
const MAX_DELAY_MS = 2_147_483_647;

let signalTimersLeft = SIGNAL_TIMERS;
let pending = 0;

/** A running timer; see {@link startTimer}. */
export class Timer {
  #callback: (() => void) | undefined;
  #signal: AbortSignal | undefined;
  #id: ReturnType<typeof setTimeout> | undefined;

  /** Use {@link startTimer}. */
  constructor(callback: () => void, ms: number) {
    this.#callback = callback;
    pending++;
    if (signalTimersLeft > 0 && ms >= 0 && ms <= MAX_DELAY_MS) {
      signalTimersLeft--;
      this.#signal = AbortSignal.timeout(Math.ceil(ms));
      this.#signal.addEventListener("abort", this, { once: true });
    } else {
      this.#id = setTimeout(expire, ms, this); // no closure per timer
    }
  }

  /** The timer expired (the listener of the signal's "abort" event). */
  handleEvent(): void {
    const callback = this.#callback;
    if (callback === undefined) return;
    this.#callback = undefined;
    pending--;
    callback();
  }

  /** Cancels the timer; idempotent, and a no-op once it fired. */
  cancel(): void {
    if (this.#callback === undefined) return;
    this.#callback = undefined;
    pending--;
    if (this.#signal) this.#signal.removeEventListener("abort", this);
    else clearTimeout(this.#id);
  }
}

function expire(timer: Timer): void {
  timer.handleEvent();
}

/**
 * Calls `callback` once, `ms` milliseconds from now (like `setTimeout`),
 * unless the returned timer is cancelled first. A pending timer keeps the
 * process alive, as `setTimeout`'s does.
 */
export function startTimer(callback: () => void, ms: number): Timer {
  return new Timer(callback, ms);
}

/** Timers started and neither fired nor cancelled (for tests: none may be left behind). */
export function pendingTimers(): number {
  return pending;
}
