/**
 * Many timeouts for the price of a few timers. Timeouts of the same duration
 * expire in the order they were scheduled, so each distinct duration gets one
 * "lane": a FIFO list with a single runtime timer armed for its head.
 * Scheduling appends to a lane and cancelling unlinks an entry, both O(1);
 * 30,000 waits with the same timeout cost one runtime timer, not 30,000
 * (Deno spends ~4 µs to create a timer and ~1.5 µs to clear one).
 *
 * Durations share a lane when they are within 1/128 of each other (a lane's
 * duration is the requested one rounded up: a timeout never fires early, and
 * at most 0.8% late), so timeouts computed from a deadline (9,998 ms, 9,997
 * ms, ...) do not each cost a timer: 1,000 connects at once with a 10 s
 * timeout share a handful.
 *
 * A lane's timer is cancelled as soon as the lane is empty, so nothing keeps the
 * process alive (or trips Deno's test sanitizers) once every wait has ended.
 * The timer comes from `runtime_timer.ts`: arming one does not load Deno's
 * Node-compatible timers.
 *
 * @module
 */
import { startTimer, type Timer } from "./runtime_timer.ts";

/** What a {@link LaneTimeout} calls when it expires. */
export interface TimeoutTarget {
  /** Called once, when the timeout expires (never when it was cancelled). */
  timedOut(): void;
}

interface Lane {
  ms: number;
  head: LaneTimeout | undefined;
  tail: LaneTimeout | undefined;
  timer: Timer | undefined;
}

const lanes = new Map<number, Lane>();

/** A scheduled timeout; see {@link scheduleTimeout}. */
export class LaneTimeout {
  /** `performance.now()` at which it is due. */
  readonly due: number;
  target: TimeoutTarget | undefined;
  prev: LaneTimeout | undefined = undefined;
  next: LaneTimeout | undefined = undefined;
  lane: Lane | undefined;

  /** Use {@link scheduleTimeout}. */
  constructor(lane: Lane, target: TimeoutTarget) {
    this.due = performance.now() + lane.ms;
    this.target = target;
    this.lane = lane;
  }

  /** Cancels the timeout; idempotent, and a no-op once it fired. */
  cancel(): void {
    const lane = this.lane;
    if (lane === undefined) return;
    unlink(lane, this);
    if (lane.head === undefined) retire(lane);
  }
}

/**
 * Calls `target.timedOut()` once, `ms` milliseconds from now (never
 * earlier), unless the returned timeout is cancelled first.
 */
export function scheduleTimeout(ms: number, target: TimeoutTarget): LaneTimeout {
  ms = laneDuration(ms);
  let lane = lanes.get(ms);
  if (lane === undefined) {
    lane = { ms, head: undefined, tail: undefined, timer: undefined };
    lanes.set(ms, lane);
  }
  const entry = new LaneTimeout(lane, target);
  entry.prev = lane.tail;
  if (lane.tail) lane.tail.next = entry;
  else lane.head = entry;
  lane.tail = entry;
  if (lane.timer === undefined) arm(lane);
  return entry;
}

/**
 * The lane a duration joins: itself up to 256 ms, else rounded up to a multiple of
 * the power of two just under 1/128 of it (1,000 ms: 4 ms steps; 10 s: 64 ms).
 */
export function laneDuration(ms: number): number {
  if (!(ms > 256)) return ms;
  const step = 2 ** (Math.floor(Math.log2(ms)) - 7);
  return Math.ceil(ms / step) * step;
}

function unlink(lane: Lane, entry: LaneTimeout): void {
  if (entry.prev) entry.prev.next = entry.next;
  else lane.head = entry.next;
  if (entry.next) entry.next.prev = entry.prev;
  else lane.tail = entry.prev;
  entry.prev =
    entry.next =
    entry.lane =
    entry.target =
      undefined;
}

/** An empty lane: stop its timer and forget it. */
function retire(lane: Lane): void {
  lane.timer?.cancel();
  lane.timer = undefined;
  if (lanes.get(lane.ms) === lane) lanes.delete(lane.ms);
}

function arm(lane: Lane): void {
  const wait = Math.max(0, Math.ceil(lane.head!.due - performance.now()));
  lane.timer = startTimer(() => run(lane), wait);
}

/** The lane's timer fired: run every entry that is due, then re-arm for the next one. */
function run(lane: Lane): void {
  lane.timer = undefined;
  const now = performance.now();
  const due: TimeoutTarget[] = [];
  while (lane.head !== undefined && lane.head.due <= now) {
    const entry = lane.head;
    due.push(entry.target!);
    unlink(lane, entry);
  }
  if (lane.head === undefined) retire(lane);
  else arm(lane);
  // Run after the lane is consistent: a target may schedule or cancel timeouts.
  for (const target of due) {
    try {
      target.timedOut();
    } catch (err) {
      // Like an exception in a timer callback: reported, and the others still run.
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}
