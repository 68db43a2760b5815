/**
 * The set of event listeners of one connection, indexed by event name:
 * registering and removing a listener are O(1) (30,000 concurrent
 * `waitEvent`s cost 30,000 constant-time steps, not 30,000²), and an event
 * is offered only to the listeners that asked for its name plus those that
 * take every event.
 *
 * @module
 */
import type { QmpEvent } from "./protocol.ts";

/**
 * What the registry delivers to: an `EventListener`, or the one-shot
 * subscriber behind `waitEvent`.
 */
export interface Subscriber {
  /** Offers an event; returns true when it was accepted. */
  deliver(event: QmpEvent): boolean;
  /** Events buffered and not yet read. */
  readonly size: number;
  /** Maximum number of buffered events. */
  readonly capacity: number;
  /** The connection closed: no more events (see `EventListener.end`). */
  end(error?: unknown, graceful?: boolean): void;
}

/** A group of subscribers: subscriber → the sequence number of the last event before it registered. */
type Group = Map<Subscriber, number>;

/**
 * Listeners registered with a connection. An event is delivered only to
 * listeners that were registered before it arrived, in registration order
 * within each name.
 */
export class ListenerRegistry {
  /** Listeners of every event (no `names`). */
  readonly #any: Group = new Map();
  /** Listeners by the event names they asked for. */
  readonly #byName = new Map<string, Group>();
  /** Every listener, with the names it was indexed under (undefined: all). */
  readonly #all = new Map<Subscriber, readonly string[] | undefined>();
  /** Listeners found more than half full by {@link deliver}, until {@link clearBehind}. */
  readonly #behind = new Set<Subscriber>();

  /** Number of registered listeners. */
  get size(): number {
    return this.#all.size;
  }

  /**
   * Registers `listener` for `names` (all events when undefined or empty).
   * `seq` is the sequence number of the last event received: an event being
   * delivered right now (from inside a `where` predicate) does not reach it.
   */
  add(listener: Subscriber, names: readonly string[] | undefined, seq: number): void {
    if (this.#all.has(listener)) return;
    const keys = names === undefined || names.length === 0
      ? undefined
      : names.length === 1
      ? names
      : [...new Set(names)];
    this.#all.set(listener, keys);
    if (keys === undefined) {
      this.#any.set(listener, seq);
      return;
    }
    for (const name of keys) {
      let group = this.#byName.get(name);
      if (group === undefined) this.#byName.set(name, group = new Map());
      group.set(listener, seq);
    }
  }

  /** Removes `listener`; a no-op when it is not registered. */
  delete(listener: Subscriber): void {
    const keys = this.#all.get(listener);
    if (keys === undefined && !this.#all.has(listener)) return;
    this.#all.delete(listener);
    this.#behind.delete(listener);
    if (keys === undefined) {
      this.#any.delete(listener);
      return;
    }
    for (const name of keys) {
      const group = this.#byName.get(name);
      if (group === undefined) continue;
      group.delete(listener);
      if (group.size === 0) this.#byName.delete(name);
    }
  }

  /**
   * Offers `event` to every listener registered before it (`event.seq`).
   * Returns true when a listener that accepted it is now more than half full,
   * i.e. its consumer should get a chance to catch up.
   */
  deliver(event: QmpEvent): boolean {
    let behind = false;
    if (this.#any.size > 0 && this.#offer(this.#any, event)) behind = true;
    if (this.#byName.size > 0) {
      const group = this.#byName.get(event.event);
      if (group !== undefined && this.#offer(group, event)) behind = true;
    }
    return behind;
  }

  #offer(group: Group, event: QmpEvent): boolean {
    let behind = false;
    for (const [listener, since] of group) {
      if (since >= event.seq) continue; // registered while this event was being delivered
      if (listener.deliver(event) && listener.size * 2 > listener.capacity) {
        this.#behind.add(listener);
        behind = true;
      }
    }
    return behind;
  }

  /** Events buffered in the listeners found more than half full since {@link clearBehind}. */
  behind(): number {
    let n = 0;
    for (const l of this.#behind) n += l.size;
    return n;
  }

  /** Forgets which listeners were behind (their consumers caught up, or will not). */
  clearBehind(): void {
    this.#behind.clear();
  }

  /** Removes every listener and returns them, in registration order. */
  clear(): Subscriber[] {
    const all = [...this.#all.keys()];
    this.#all.clear();
    this.#any.clear();
    this.#byName.clear();
    this.#behind.clear();
    return all;
  }
}
