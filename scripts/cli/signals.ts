/**
 * Stop signals (SIGINT, SIGTERM) for the CLI commands, with duplicates
 * coalesced: one Ctrl-C under `deno task` arrives twice (the task runner
 * forwards SIGINT to its child, and the terminal sends it to the whole
 * foreground process group as well), a few milliseconds apart.
 *
 * @module
 */

/** The signals that ask a command to stop. */
export type StopSignal = "SIGINT" | "SIGTERM";

/** Exit status for a command stopped by `signal` (128 + its number, as shells report it). */
export const SIGNAL_EXIT_CODE: Readonly<Record<StopSignal, number>> = {
  SIGINT: 130,
  SIGTERM: 143,
};

/**
 * Signals arriving within this many ms of the first one are the same
 * request. The duplicate from `deno task` comes within a few ms; 1 s leaves
 * room for a loaded machine delaying the forwarded copy, and is still shorter
 * than a person takes to see that the first Ctrl-C is slow and press it again.
 */
export const SAME_SIGNAL_WINDOW_MS = 1000;

/** Callbacks of {@link onStopSignals}. */
export interface StopHandlers {
  /** The first stop signal: stop gracefully. */
  stop(signal: StopSignal): void;
  /**
   * A further stop signal, after the window: stop at once. Without it,
   * further signals are ignored (the graceful stop is bounded).
   */
  force?(signal: StopSignal): void;
}

/** Options of {@link onStopSignals} (for tests). */
export interface StopSignalOptions {
  /** The signals to handle (default: SIGINT and SIGTERM). */
  signals?: readonly StopSignal[];
  /** The coalescing window in ms (default {@link SAME_SIGNAL_WINDOW_MS}). */
  windowMs?: number;
  /** The clock (default `performance.now`). */
  now?: () => number;
  /** Registers a listener (default `Deno.addSignalListener`). */
  addListener?: (signal: StopSignal, fn: () => void) => void;
  /** Removes a listener (default `Deno.removeSignalListener`). */
  removeListener?: (signal: StopSignal, fn: () => void) => void;
}

/** What {@link onStopSignals} returns: the first signal received, and how to stop listening. */
export interface StopSignalListener extends Disposable {
  /** The first stop signal received, if any. */
  readonly received: StopSignal | undefined;
  /** Removes the listeners. Idempotent. */
  dispose(): void;
}

/**
 * Listens for stop signals: the first calls `handlers.stop`, copies within
 * `windowMs` of the previous accepted one are ignored, and a later one calls
 * `handlers.force` (once). Signals during the window restart nothing: the
 * window counts from the signal that was acted on.
 */
export function onStopSignals(
  handlers: StopHandlers,
  options: StopSignalOptions = {},
): StopSignalListener {
  const signals = options.signals ?? ["SIGINT", "SIGTERM"];
  const windowMs = options.windowMs ?? SAME_SIGNAL_WINDOW_MS;
  const now = options.now ?? (() => performance.now());
  const add = options.addListener ?? ((s, fn) => Deno.addSignalListener(s, fn));
  const remove = options.removeListener ?? ((s, fn) => Deno.removeSignalListener(s, fn));
  let received: StopSignal | undefined;
  let actedAt = 0;
  let forced = false;
  const listeners = signals.map((signal) => {
    const fn = () => {
      const t = now();
      if (received === undefined) {
        received = signal;
        actedAt = t;
        handlers.stop(signal);
        return;
      }
      if (t - actedAt < windowMs || forced || !handlers.force) return;
      forced = true;
      actedAt = t;
      handlers.force(signal);
    };
    return { signal, fn };
  });
  const added: typeof listeners = [];
  for (const l of listeners) {
    try {
      add(l.signal, l.fn);
      added.push(l);
    } catch { /* this platform has no such signal */ }
  }
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const l of added) {
      try {
        remove(l.signal, l.fn);
      } catch { /* already gone */ }
    }
  };
  return {
    get received() {
      return received;
    },
    dispose,
    [Symbol.dispose]: dispose,
  };
}
