/**
 * Many timeouts for the price of a few timers. Timeouts of the same duration
 * expire in the order they were scheduled, so each distinct duration gets one
 * "lane": a FIFO list with a single runtime timer armed for its head.
 * Scheduling appends to a lane and cancelling unlinks an entry, both O(1);
 * 30,000 waits with the same timeout cost one runtime timer, not 30,000.
 *
 * Durations share a lane when they are within 1/128 of each other (a lane's
 * duration is the requested one rounded up: a timeout never fires early, and
 * at most 0.8% late), so timeouts computed from a deadline (9,998 ms, 9,997
 * ms, ...) do not each cost a timer: 1,000 connects at once with a 10 s
 * timeout share a handful.
 *
 * A lane's timer is an `AbortSignal.timeout()` with the lane as its "abort"
 * listener: the runtime's own timers, so no timeout of the library loads
 * Deno's Node-compatible timers (in Deno 2.9 the first read of the global
 * `setTimeout` does: ~7 ms of a one-shot CLI run, ~4 MB of RSS). Such a timer
 * keeps the process alive only while it has a listener, and cannot be
 * cleared: an empty lane removes its listener (nothing is kept alive, and
 * Deno's test sanitizers have nothing to report) and keeps the signal, which
 * the lane's next timeout reuses if it fires in time. So a lane creates at
 * most one signal per expiry, however many timeouts come and go.
 *
 * @module
 */

/** What a {@link LaneTimeout} calls when it expires. */
export interface TimeoutTarget {
  /**
   * Called once, when the timeout expires (never when it was cancelled), from a
   * microtask right after the runtime timer fires.
   */
  timedOut(): void;
}

/** Timeouts of one duration, oldest first, and the runtime timer armed for the oldest. */
class Lane {
  readonly ms: number;
  head: LaneTimeout | undefined = undefined;
  tail: LaneTimeout | undefined = undefined;
  /** The runtime timer: a signal that aborts when it expires (kept after the lane empties). */
  signal: AbortSignal | undefined = undefined;
  /** `performance.now()` by which `signal` aborts. */
  firesBy = 0;
  /** True while the lane listens to `signal` (the timer keeps the process alive). */
  listening = false;

  constructor(ms: number) {
    this.ms = ms;
  }

  /** The runtime timer expired. */
  handleEvent(): void {
    this.listening = false;
    this.signal = undefined;
    run(this);
  }
}

const lanes = new Map<number, Lane>();
/** Lanes kept without timeouts (for their signal) beyond which empty lanes are forgotten. */
const MAX_IDLE_LANES = 64;

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
    this.target = undefined; // also when it is due and waits for its batch (see `run`)
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
    if (lanes.size >= MAX_IDLE_LANES) forgetIdleLanes();
    lane = new Lane(ms);
    lanes.set(ms, lane);
  }
  const entry = new LaneTimeout(lane, target);
  entry.prev = lane.tail;
  if (lane.tail) lane.tail.next = entry;
  else lane.head = entry;
  lane.tail = entry;
  if (!lane.listening) arm(lane);
  return entry;
}

/** Runtime timers pending for timeouts (for tests: none may be left behind). */
export function pendingLaneTimers(): number {
  let n = 0;
  for (const lane of lanes.values()) if (lane.listening) n++;
  return n;
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

/** An empty lane: its timer no longer keeps the process alive (the signal stays, for reuse). */
function retire(lane: Lane): void {
  if (lane.listening) {
    lane.signal!.removeEventListener("abort", lane);
    lane.listening = false;
  }
  if (lane.signal === undefined || lane.signal.aborted) lanes.delete(lane.ms);
}

/** Forgets the lanes that have no timeouts (their signals expire on their own). */
function forgetIdleLanes(): void {
  for (const [ms, lane] of lanes) if (lane.head === undefined) lanes.delete(ms);
}

/** Makes the lane's timer fire by the time its head is due. */
function arm(lane: Lane): void {
  const due = lane.head!.due;
  if (lane.signal !== undefined && !lane.signal.aborted && lane.firesBy <= due) {
    // The kept timer fires no later than the head is due: listen again. If it fires
    // before, `run` finds nothing due and arms a timer for the head.
    lane.signal.addEventListener("abort", lane);
    lane.listening = true;
    return;
  }
  if (lane.listening) lane.signal!.removeEventListener("abort", lane);
  const now = performance.now();
  const wait = Math.max(0, Math.ceil(due - now));
  lane.signal = AbortSignal.timeout(wait);
  lane.firesBy = now + wait;
  lane.signal.addEventListener("abort", lane);
  lane.listening = true;
}

/**
 * The lane's timer fired: detach the entries that are due (a prefix of the
 * lane), re-arm for the next one, and run the detached ones in a microtask.
 * Not in the timer callback itself: an error built there (a `TimeoutError`)
 * captures the runtime's event-dispatch frames, which costs ~3× as much as on
 * the short stack of a microtask, and 30,000 waits expiring together make that
 * the bulk of their cost.
 */
function run(lane: Lane): void {
  const now = performance.now();
  const first = lane.head;
  let last: LaneTimeout | undefined;
  for (let e = first; e !== undefined && e.due <= now; e = e.next) {
    e.lane = undefined; // detached: cancel() only clears its target
    last = e;
  }
  if (last !== undefined) {
    lane.head = last.next;
    if (lane.head !== undefined) lane.head.prev = undefined;
    else lane.tail = undefined;
    last.next = undefined;
    // A promise reaction, not queueMicrotask(): no wrapper frames on the stack either.
    Promise.resolve(first).then(expire);
  }
  if (lane.head === undefined) retire(lane);
  else arm(lane);
}

/** Calls the targets of a detached chain of due entries, skipping those cancelled meanwhile. */
function expire(entry: LaneTimeout | undefined): void {
  while (entry !== undefined) {
    const { target, next } = entry;
    entry.target = entry.prev = entry.next = undefined;
    entry = next;
    if (target === undefined) continue;
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
