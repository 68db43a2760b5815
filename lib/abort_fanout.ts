/**
 * One `abort` listener per signal, fanned out to any number of waits. A DOM
 * `EventTarget` checks every listener already registered when one is added
 * or removed, so 30,000 waits sharing one `AbortSignal` would cost 30,000²
 * steps; here each wait joins or leaves a set in O(1), and the signal carries
 * a single listener that is removed when the last wait leaves.
 *
 * @module
 */

/** What {@link watchAbort} calls when the signal aborts. */
export interface AbortTarget {
  /** Called once, when the signal aborts (never after {@link unwatchAbort}). */
  aborted(): void;
}

interface Watch {
  targets: Set<AbortTarget>;
  listener: () => void;
}

const watches = new WeakMap<AbortSignal, Watch>();

/** Calls `target.aborted()` when `signal` aborts, unless {@link unwatchAbort} is called first. */
export function watchAbort(signal: AbortSignal, target: AbortTarget): void {
  let watch = watches.get(signal);
  if (watch === undefined) {
    const targets = new Set<AbortTarget>();
    const listener = () => {
      watches.delete(signal);
      for (const t of [...targets]) t.aborted();
    };
    watch = { targets, listener };
    watches.set(signal, watch);
    signal.addEventListener("abort", listener, { once: true });
  }
  watch.targets.add(target);
}

/** Stops watching; the signal's listener goes away with the last target. Idempotent. */
export function unwatchAbort(signal: AbortSignal, target: AbortTarget): void {
  const watch = watches.get(signal);
  if (watch === undefined || !watch.targets.delete(target)) return;
  if (watch.targets.size === 0) {
    watches.delete(signal);
    signal.removeEventListener("abort", watch.listener);
  }
}
