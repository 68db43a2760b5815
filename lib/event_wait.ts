/**
 * One event wait: the light, one-shot subscriber behind
 * `QmpClient.waitEvent`. No buffer, no iterator and no closures per wait: a
 * filter, a promise, and a timeout on a shared timer lane, so tens of
 * thousands of concurrent waits are cheap to arm, to satisfy and to time out.
 *
 * @module
 */
import { type AbortTarget, unwatchAbort, watchAbort } from "./abort_fanout.ts";
import { type Duration, parseDuration } from "./duration.ts";
import { AbortError, TimeoutError } from "./errors.ts";
import { describeWait, type EventWhere, matchesPattern } from "./events.ts";
import type { ListenerRegistry, Subscriber } from "./listener_registry.ts";
import type { QmpEvent } from "./protocol.ts";
import { type LaneTimeout, scheduleTimeout, type TimeoutTarget } from "./timer_lanes.ts";

/** How long {@link waitForEvent} may wait, and what cancels it. */
export interface EventWaitBounds {
  /** Reject with `TimeoutError` after this long. */
  timeout?: Duration;
  /** Reject with `AbortError` when aborted. */
  signal?: AbortSignal;
}

class EventWait<E extends QmpEvent> implements Subscriber, TimeoutTarget, AbortTarget {
  readonly #registry: ListenerRegistry;
  readonly #name: string;
  readonly #where: EventWhere<E> | undefined;
  readonly #signal: AbortSignal | undefined;
  #resolve!: (event: E) => void;
  #reject!: (error: unknown) => void;
  #timer: LaneTimeout | undefined;
  #ms = 0;
  #settled = false;
  readonly promise: Promise<E>;

  constructor(
    registry: ListenerRegistry,
    name: string,
    where: EventWhere<E> | undefined,
    bounds: EventWaitBounds,
    seq: number,
  ) {
    this.#registry = registry;
    this.#name = name;
    this.#where = where;
    this.#signal = bounds.signal;
    this.promise = new Promise<E>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    if (bounds.signal?.aborted) {
      this.#settled = true;
      this.#reject(new AbortError(this.#what(), { cause: bounds.signal.reason }));
      return;
    }
    if (bounds.timeout !== undefined) {
      this.#ms = parseDuration(bounds.timeout);
      this.#timer = scheduleTimeout(this.#ms, this);
    }
    if (bounds.signal) watchAbort(bounds.signal, this);
    registry.add(this, name, seq);
  }

  /** Never buffers: an accepted event settles it. */
  get size(): number {
    return 0;
  }

  get capacity(): number {
    return 1;
  }

  deliver(event: QmpEvent): boolean {
    if (this.#settled) return false;
    const where = this.#where;
    if (where !== undefined) {
      const ok = typeof where === "function"
        ? (where as (e: QmpEvent) => boolean)(event)
        : matchesPattern(event.data, where);
      if (!ok) return false;
    }
    if (this.#finish()) this.#resolve(event as E);
    return true;
  }

  end(error?: unknown): void {
    if (this.#finish()) {
      this.#reject(error ?? new AbortError(`${this.#what()} (the connection was closed)`));
    }
  }

  timedOut(): void {
    this.#timer = undefined;
    if (this.#finish()) this.#reject(new TimeoutError(this.#what(), this.#ms));
  }

  aborted(): void {
    if (this.#finish()) {
      this.#reject(new AbortError(this.#what(), { cause: this.#signal!.reason }));
    }
  }

  #finish(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#timer?.cancel();
    if (this.#signal) unwatchAbort(this.#signal, this);
    this.#registry.delete(this);
    return true;
  }

  #what(): string {
    return `Waiting for ${
      describeWait([this.#name], this.#where as EventWhere<never> | undefined)
    }`;
  }
}

/**
 * Registers a one-shot subscriber for the next event named `name` that
 * `where` accepts, and resolves with it. The promise is marked handled. Rejects with `TimeoutError` /
 * `AbortError` per `bounds` (naming the event and the filter), or with the
 * error the connection closed with. `seq` is the client's last event
 * sequence number (see {@link ListenerRegistry.add}).
 */
export function waitForEvent<E extends QmpEvent>(
  registry: ListenerRegistry,
  name: string,
  where: EventWhere<E> | undefined,
  bounds: EventWaitBounds,
  seq: number,
): Promise<E> {
  const promise = new EventWait<E>(registry, name, where, bounds, seq).promise;
  promise.catch(ignore); // an unawaited wait that times out must not crash the process
  return promise;
}

function ignore(): void {}
