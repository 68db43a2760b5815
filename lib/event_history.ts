/**
 * The recent events of one connection, for `waitEvent(name, { since })`: a ring
 * of the last `capacity` events. Adding one is O(1) (an array `shift()` per event,
 * once full, cost an event flood ~4% of its throughput over a socket, ~12% in
 * process); the ring grows with the events seen, so a connection that saw a few
 * events holds a few slots.
 *
 * @module
 */
import type { QmpEvent } from "./protocol.ts";

/** The last `capacity` events, oldest first. */
export class EventHistory {
  readonly #capacity: number;
  readonly #ring: QmpEvent[] = [];
  /** Once the ring is full: the slot of the oldest event, which the next one replaces. */
  #oldest = 0;

  /** Keeps the last `capacity` events (a positive integer). */
  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Number of events held. */
  get size(): number {
    return this.#ring.length;
  }

  /** Adds the newest event, dropping the oldest when full. */
  push(event: QmpEvent): void {
    const ring = this.#ring;
    if (ring.length < this.#capacity) {
      ring.push(event);
      return;
    }
    ring[this.#oldest] = event;
    this.#oldest = this.#oldest + 1 === ring.length ? 0 : this.#oldest + 1;
  }

  /** The oldest event `test` accepts. */
  find(test: (event: QmpEvent) => boolean): QmpEvent | undefined {
    const ring = this.#ring;
    const n = ring.length;
    for (let i = 0, at = this.#oldest; i < n; i++) {
      const e = ring[at];
      if (test(e)) return e;
      at = at + 1 === n ? 0 : at + 1;
    }
    return undefined;
  }
}
