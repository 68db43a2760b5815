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

/** Subscribers found more than half full; adding the same one again is a pointer compare. */
class BehindSet {
  #last: Subscriber | undefined;
  readonly #set = new Set<Subscriber>();

  add(s: Subscriber): void {
    if (s === this.#last) return;
    this.#last = s;
    this.#set.add(s);
  }

  delete(s: Subscriber): void {
    if (this.#last === s) this.#last = undefined;
    this.#set.delete(s);
  }

  clear(): void {
    this.#last = undefined;
    this.#set.clear();
  }

  /** Events buffered in them. */
  buffered(): number {
    let n = 0;
    for (const s of this.#set) n += s.size;
    return n;
  }
}

/**
 * The subscribers of one name (or of every event). A map for O(1) add and
 * delete, plus an array snapshot for delivery, rebuilt on the first delivery
 * after a change: rebuilding costs no more than the delivery loop it serves,
 * and the event flood path iterates a plain array.
 */
class Group {
  /** Subscriber → the sequence number of the last event before it registered. */
  readonly #members = new Map<Subscriber, number>();
  #list: Subscriber[] | undefined;
  #since: number[] = [];

  get size(): number {
    return this.#members.size;
  }

  add(subscriber: Subscriber, seq: number): void {
    this.#members.set(subscriber, seq);
    this.#list = undefined;
  }

  delete(subscriber: Subscriber): void {
    if (this.#members.delete(subscriber)) this.#list = undefined;
  }

  /**
   * Offers `event` to the members registered before it; adds those now more
   * than half full to `behind`. A member removed meanwhile may still be offered
   * the event (it declines: it has ended); one added meanwhile is not.
   */
  offer(event: QmpEvent, behind: BehindSet): boolean {
    let list = this.#list;
    if (list === undefined) {
      list = this.#list = [...this.#members.keys()];
      this.#since = [...this.#members.values()];
    }
    const since = this.#since;
    let any = false;
    for (let i = 0; i < list.length; i++) {
      if (since[i] >= event.seq) continue; // registered while this event was being delivered
      const s = list[i];
      if (s.deliver(event) && s.size * 2 > s.capacity) {
        behind.add(s);
        any = true;
      }
    }
    return any;
  }
}

/**
 * Listeners registered with a connection. An event is delivered only to
 * listeners that were registered before it arrived, in registration order
 * within each name.
 */
export class ListenerRegistry {
  /** Listeners of every event (no `names`). */
  #any = new Group();
  /** Listeners by the event names they asked for. */
  readonly #byName = new Map<string, Group>();
  /** Every listener, with the name(s) it was indexed under (undefined: all). */
  readonly #all = new Map<Subscriber, string | readonly string[] | undefined>();
  /** Listeners found more than half full by {@link deliver}, until {@link clearBehind}. */
  readonly #behind = new BehindSet();

  /** Number of registered listeners. */
  get size(): number {
    return this.#all.size;
  }

  /**
   * Registers `listener` for `names` (one name, a list, or all events when
   * undefined or empty).
   * `seq` is the sequence number of the last event received: an event being
   * delivered right now (from inside a `where` predicate) does not reach it.
   */
  add(listener: Subscriber, names: string | readonly string[] | undefined, seq: number): void {
    if (this.#all.has(listener)) return;
    const keys = names === undefined || names.length === 0
      ? undefined
      : typeof names === "string"
      ? names
      : names.length === 1
      ? names[0]
      : [...new Set(names)];
    this.#all.set(listener, keys);
    if (keys === undefined) this.#any.add(listener, seq);
    else if (typeof keys === "string") this.#groupOf(keys).add(listener, seq);
    else for (const name of keys) this.#groupOf(name).add(listener, seq);
  }

  #groupOf(name: string): Group {
    let group = this.#byName.get(name);
    if (group === undefined) this.#byName.set(name, group = new Group());
    return group;
  }

  /** Removes `listener`; a no-op when it is not registered. */
  delete(listener: Subscriber): void {
    const keys = this.#all.get(listener);
    if (keys === undefined && !this.#all.has(listener)) return;
    this.#all.delete(listener);
    this.#behind.delete(listener);
    if (keys === undefined) this.#any.delete(listener);
    else if (typeof keys === "string") this.#leave(keys, listener);
    else for (const name of keys) this.#leave(name, listener);
  }

  #leave(name: string, listener: Subscriber): void {
    const group = this.#byName.get(name);
    if (group === undefined) return;
    group.delete(listener);
    if (group.size === 0) this.#byName.delete(name);
  }

  /**
   * Offers `event` to every listener registered before it (`event.seq`).
   * Returns true when a listener that accepted it is now more than half full,
   * i.e. its consumer should get a chance to catch up.
   */
  deliver(event: QmpEvent): boolean {
    let behind = false;
    if (this.#any.size > 0 && this.#any.offer(event, this.#behind)) behind = true;
    if (this.#byName.size > 0) {
      const group = this.#byName.get(event.event);
      if (group !== undefined && group.offer(event, this.#behind)) behind = true;
    }
    return behind;
  }

  /** Events buffered in the listeners found more than half full since {@link clearBehind}. */
  behind(): number {
    return this.#behind.buffered();
  }

  /** Forgets which listeners were behind (their consumers caught up, or will not). */
  clearBehind(): void {
    this.#behind.clear();
  }

  /** Removes every listener and returns them, in registration order. */
  clear(): Subscriber[] {
    const all = [...this.#all.keys()];
    this.#all.clear();
    this.#any = new Group();
    this.#byName.clear();
    this.#behind.clear();
    return all;
  }
}
