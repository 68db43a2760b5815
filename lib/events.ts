/**
 * Event listeners: a bounded, filtered queue of QMP events that is also an
 * async iterator. The client delivers every event to every listener registered
 * when it arrives; a listener buffers until it is read.
 *
 * @module
 */
import { AbortError, EventOverflowError } from "./errors.ts";
import type { QmpEvent } from "./protocol.ts";
import type { Duration } from "./duration.ts";
import { boundedWait } from "./deadline.ts";
import { type AbortTarget, unwatchAbort, watchAbort } from "./abort_fanout.ts";
import { excerpt } from "./framing.ts";

/**
 * What to do when a listener's buffer is full and another event arrives:
 * - `"error"` (default): keep the buffered events, stop accepting more, and
 *   make the iterator throw {@link EventOverflowError} once the buffered events
 *   have been read. Nothing is lost silently.
 * - `"drop-oldest"`: discard the oldest buffered event (counted in `dropped`).
 * - `"drop-newest"`: discard the arriving event (counted in `dropped`).
 */
export type OverflowPolicy = "error" | "drop-oldest" | "drop-newest";

/** A recursive partial match against an event's `data`: every given key must match. */
export type DataPattern = { [key: string]: unknown };

/** Selects events: by predicate on the whole event, or by a partial match on `data`. */
export type EventWhere<E extends QmpEvent = QmpEvent> = ((event: E) => boolean) | DataPattern;

/** Options of a listener. */
export interface ListenOptions<E extends QmpEvent = QmpEvent> {
  /** Event names to accept; all events when omitted or empty. */
  names?: readonly string[];
  /** Further filter: a predicate, or a partial match on `data` (`{ device: "tab0" }`). */
  where?: EventWhere<E>;
  /** Maximum number of buffered events (default 1000). */
  bufferSize?: number;
  /** Policy when the buffer is full (default `"error"`). */
  overflow?: OverflowPolicy;
  /** Ends the iteration (with an {@link AbortError}) when aborted. */
  signal?: AbortSignal;
}

/** Options for reading one event. */
export interface NextEventOptions {
  /** Give up after this long with a {@link TimeoutError}. */
  timeout?: Duration;
  /** Give up when aborted, with an {@link AbortError}. */
  signal?: AbortSignal;
}

/**
 * Returns true when `value` matches `pattern`: objects match if every key of
 * the pattern matches recursively, arrays element-wise, other values by `===`.
 * `undefined` in the pattern matches anything.
 */
export function matchesPattern(value: unknown, pattern: unknown): boolean {
  if (pattern === undefined) return true;
  if (typeof pattern !== "object" || pattern === null) return Object.is(value, pattern);
  if (typeof value !== "object" || value === null) return false;
  if (Array.isArray(pattern)) {
    return Array.isArray(value) && pattern.length === value.length &&
      pattern.every((p, i) => matchesPattern(value[i], p));
  }
  for (const [k, p] of Object.entries(pattern)) {
    if (!matchesPattern((value as Record<string, unknown>)[k], p)) return false;
  }
  return true;
}

/**
 * Describes what a listener waits for, for messages: `STOP`, `RESET or
 * SHUTDOWN`, `DEVICE_DELETED with data matching {"device":"tab0"}`, or
 * `an event`.
 */
export function describeWait(
  names: readonly string[] | undefined,
  where: EventWhere<never> | undefined,
): string {
  const what = names && names.length > 0
    ? names.length <= 4
      ? names.join(" or ")
      : `${names.slice(0, 4).join(", ")} or ${names.length - 4} other events`
    : "an event";
  if (where === undefined) return what;
  if (typeof where === "function") {
    const source = excerpt(String(where).replace(/\s+/g, " "), 80);
    return `${what} accepted by the where predicate ${source}`;
  }
  let pattern: string;
  try {
    pattern = JSON.stringify(where);
  } catch {
    pattern = String(where);
  }
  return `${what} with data matching ${excerpt(pattern, 120)}`;
}

/** Builds the acceptance test for a set of listen options. */
export function eventPredicate<E extends QmpEvent>(
  names: readonly string[] | undefined,
  where: EventWhere<E> | undefined,
): (event: QmpEvent) => boolean {
  const nameSet = names && names.length > 0 ? new Set(names) : undefined;
  const test = where === undefined
    ? undefined
    : typeof where === "function"
    ? where as (e: QmpEvent) => boolean
    : (e: QmpEvent) => matchesPattern(e.data, where);
  return (e) => (!nameSet || nameSet.has(e.event)) && (!test || test(e));
}

interface Waiter<E> {
  resolve(r: IteratorResult<E, undefined>): void;
  reject(e: unknown): void;
  /** Set once it is out of the queue's hands: settled, or its read gave up (then swept lazily). */
  gone: boolean;
}

/**
 * A filtered, bounded queue of events; iterate it with `for await`, or read
 * one event at a time with {@link EventListener.next} / {@link EventListener.get}.
 * Created by `QmpClient.listen()` / `events()`; stop it with `close()` or
 * `await using`.
 *
 * @example
 * ```ts ignore
 * using resets = qmp.listen({ names: ["RESET"] });
 * await qmp.execute("system_reset");
 * const ev = await resets.get({ timeout: "5s" });
 * ```
 */
export class EventListener<E extends QmpEvent = QmpEvent>
  implements AsyncIterableIterator<E, undefined>, AsyncDisposable, Disposable {
  /** Number of events discarded by the overflow policy. */
  dropped = 0;
  readonly #accept: (event: QmpEvent) => boolean;
  readonly #capacity: number;
  readonly #policy: OverflowPolicy;
  #buf: (E | undefined)[];
  #head = 0;
  #count = 0;
  /**
   * Pending reads, oldest first. A read that gives up is only marked
   * (O(1)); marked ones are skipped, and swept once they are the majority.
   */
  #waiters: Waiter<E>[] = [];
  #cancelledWaiters = 0;
  #ended = false;
  #endError: unknown;
  #closeReason: unknown;
  #overflowed = false;
  #detach: (() => void) | undefined;
  #onAbort: AbortTarget | undefined;
  #signal: AbortSignal | undefined;
  readonly #names: readonly string[] | undefined;
  /** For {@link EventListener.description} only (`never`: keeps the class covariant in E). */
  readonly #where: EventWhere<never> | undefined;

  /**
   * Creates a listener. Normally obtained from `QmpClient.listen()`; `detach`
   * is called once when the listener is closed.
   */
  constructor(options: ListenOptions<E> = {}, detach?: () => void) {
    this.#accept = eventPredicate(options.names, options.where);
    this.#names = options.names;
    this.#where = options.where as EventWhere<never> | undefined;
    this.#capacity = options.bufferSize ?? 1000;
    if (!Number.isInteger(this.#capacity) || this.#capacity < 1) {
      throw new RangeError(`bufferSize must be a positive integer, got ${options.bufferSize}`);
    }
    this.#policy = options.overflow ?? "error";
    this.#buf = new Array(Math.min(this.#capacity, 64));
    const signal = options.signal;
    if (signal?.aborted) {
      // Ended from the start; never attached, so there is nothing to detach.
      this.end(new AbortError("Event listener", { cause: signal.reason }));
      return;
    }
    this.#detach = detach;
    if (signal) {
      this.#signal = signal;
      this.#onAbort = {
        aborted: () => this.end(new AbortError("Event listener", { cause: signal.reason })),
      };
      watchAbort(signal, this.#onAbort);
    }
  }

  /** Maximum number of buffered events (`bufferSize`). */
  get capacity(): number {
    return this.#capacity;
  }

  /** Number of events buffered and not yet read. */
  get size(): number {
    return this.#count;
  }

  /** True once the listener no longer receives events (closed, or its connection closed). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Tests whether this listener wants `event` (name and `where` filter). */
  accepts(event: QmpEvent): boolean {
    return this.#accept(event);
  }

  /** Offers an event; it is queued if accepted. Returns true when accepted. Used by the client. */
  deliver(event: QmpEvent): boolean {
    if (this.#ended || this.#overflowed || !this.#accept(event)) return false;
    const waiter = this.#nextWaiter();
    if (waiter) {
      waiter.resolve({ value: event as E, done: false });
      return true;
    }
    if (this.#count === this.#capacity) {
      if (this.#policy === "drop-newest") {
        this.dropped++;
        return false;
      }
      if (this.#policy === "drop-oldest") {
        this.#shift();
        this.dropped++;
      } else {
        this.dropped++;
        this.#overflowed = true;
        this.#endError = new EventOverflowError(this.#capacity);
        this.#stop();
        return false;
      }
    }
    this.#pushBack(event as E);
    return true;
  }

  /** Reads the next event; `done` once the listener has ended and its buffer is empty. */
  next(): Promise<IteratorResult<E, undefined>> {
    if (this.#count > 0) return Promise.resolve({ value: this.#shift(), done: false });
    if (this.#ended || this.#overflowed) {
      if (this.#endError !== undefined) return Promise.reject(this.#endError);
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject, gone: false }));
  }

  /**
   * Reads one event, waiting up to `timeout`. Rejects with {@link TimeoutError},
   * {@link AbortError}, or the reason the listener ended (e.g. a
   * `ConnectionClosedError`).
   */
  get(options: NextEventOptions = {}): Promise<E> {
    if (this.#count > 0) return Promise.resolve(this.#shift());
    const what = () => `Waiting for ${this.description}`;
    if (this.#ended || this.#overflowed) return Promise.reject(this.#endedError(what()));
    return boundedWait<E>(what, options, (resolve, reject) => {
      const waiter: Waiter<E> = {
        resolve: (r) => r.done ? reject(this.#endedError(what())) : resolve(r.value),
        reject,
        gone: false,
      };
      this.#waiters.push(waiter);
      return () => this.#cancelWaiter(waiter);
    });
  }

  /**
   * What this listener accepts, for messages: `STOP`, `RESET or SHUTDOWN`,
   * `DEVICE_DELETED with data matching {"device":"tab0"}`, `an event`.
   */
  get description(): string {
    return describeWait(this.#names, this.#where);
  }

  /** Discards and returns all buffered events. */
  drain(): E[] {
    const out: E[] = [];
    while (this.#count > 0) out.push(this.#shift());
    return out;
  }

  /** Stops receiving events; buffered events can still be read, then iteration ends. */
  close(): void {
    this.end();
  }

  /**
   * Ends the listener: no more events are accepted. Iteration yields the
   * buffered events, then ends — or throws `error` if one is given and
   * `graceful` is false. {@link EventListener.get} rejects with `error` either
   * way. Used by the client when the connection closes.
   */
  end(error?: unknown, graceful = false): void {
    if (this.#ended) return;
    if (error !== undefined) {
      if (graceful) this.#closeReason = error;
      else if (this.#endError === undefined) this.#endError = error;
    }
    this.#stop();
  }

  /** Ends iteration early (called by `for await` on `break`). */
  return(): Promise<IteratorResult<E, undefined>> {
    this.close();
    this.#buf = [];
    this.#count = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  /** This listener is its own async iterator. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Closes the listener (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes the listener (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #endedError(what: string): unknown {
    if (this.#endError !== undefined) return this.#endError;
    if (this.#closeReason !== undefined) return this.#closeReason;
    return new AbortError(`${what} (the listener was closed)`);
  }

  #stop(): void {
    this.#ended = true;
    if (this.#onAbort) unwatchAbort(this.#signal!, this.#onAbort);
    this.#onAbort = undefined;
    const detach = this.#detach;
    this.#detach = undefined;
    detach?.();
    // Buffered events are still readable; waiters exist only when the buffer is empty.
    const waiters = this.#waiters;
    this.#waiters = [];
    this.#cancelledWaiters = 0;
    for (const w of waiters) {
      if (w.gone) continue;
      w.gone = true;
      if (this.#endError !== undefined) w.reject(this.#endError);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Takes the oldest pending read that has not given up. */
  #nextWaiter(): Waiter<E> | undefined {
    while (this.#waiters.length > 0) {
      const w = this.#waiters.shift()!;
      if (!w.gone) {
        w.gone = true;
        return w;
      }
      this.#cancelledWaiters--;
    }
    return undefined;
  }

  #cancelWaiter(waiter: Waiter<E>): void {
    if (waiter.gone) return; // settled by an event or the end: not queued any more
    waiter.gone = true;
    // Still queued: sweep when the ones that gave up are the majority.
    if (++this.#cancelledWaiters > 32 && this.#cancelledWaiters * 2 > this.#waiters.length) {
      this.#waiters = this.#waiters.filter((w) => !w.gone);
      this.#cancelledWaiters = 0;
    }
  }

  #pushBack(event: E): void {
    if (this.#count === this.#buf.length) {
      // Grow the ring (up to capacity), unrolling it so head is at 0.
      const next = new Array<E | undefined>(Math.min(this.#capacity, this.#buf.length * 2));
      for (let i = 0; i < this.#count; i++) {
        next[i] = this.#buf[(this.#head + i) % this.#buf.length];
      }
      this.#buf = next;
      this.#head = 0;
    }
    this.#buf[(this.#head + this.#count) % this.#buf.length] = event;
    this.#count++;
  }

  #shift(): E {
    const e = this.#buf[this.#head] as E;
    this.#buf[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#buf.length;
    this.#count--;
    return e;
  }
}
