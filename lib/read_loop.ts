/**
 * The read loop of one connection: reads the transport into a buffer that
 * starts small and grows on full reads, frames JSON objects, dispatches each
 * message, and lets event consumers catch up (microtask turns) when a
 * listener is half full, so a flood never outruns a `for await` reader.
 * End of stream and read errors go back to the session.
 *
 * @module
 */
import type { JsonObjectFramer } from "./framing.ts";
import type { Transport } from "./transport.ts";

/**
 * First size of a connection's read buffer: an idle connection holds only this (QEMU's
 * greeting, replies like query-status's and most events fit). A full read makes it 4×
 * larger, up to the max; {@link SHRINK_AFTER} reads in a row that would have fit the
 * first size return to it.
 */
const READ_BUFFER_MIN = 1024;
/** Small reads in a row after which a grown buffer is dropped (not on a flood's lulls). */
const SHRINK_AFTER = 16;
const READ_BUFFER_MAX = 64 * 1024;
/** Microtask turns per catch-up round (a `for await` consumer takes ~1 per event). */
const CATCH_UP_TICKS = 8;

/** What the read loop needs from its session. */
export interface ReadLoopHost {
  /** False once the session closed or moved to another transport: the loop stops. */
  isCurrent(transport: Transport): boolean;
  /** Handles one message; may throw a ProtocolError, which ends the loop via `failed`. */
  dispatch(message: Record<string, unknown>): void;
  /** True (once) when a listener became half full since the last call. */
  takeCatchUp(): boolean;
  /** Events buffered in listeners that were more than half full (see ListenerRegistry). */
  behind(): number;
  /** Forgets which listeners were behind. */
  clearBehind(): void;
  /** The peer closed the stream. */
  ended(): void;
  /** Reading or framing failed. */
  failed(err: unknown): void;
}

/** Reads `transport` until it ends, fails, or is no longer the session's. */
export async function readLoop(
  transport: Transport,
  framer: JsonObjectFramer,
  host: ReadLoopHost,
): Promise<void> {
  // Small while replies are small (an idle connection holds 1 KiB, not 64 KiB),
  // larger once a read fills it: floods and big replies still take few reads; back to
  // small once reads are small again (after a big reply, the connection idles small).
  let buf = new Uint8Array(READ_BUFFER_MIN);
  let small = 0;
  /** The last read's messages; cleared before the next read waits (or an idle connection keeps them). */
  let messages: Record<string, unknown>[] | undefined;
  try {
    while (true) {
      const n = await transport.read(buf);
      if (!host.isCurrent(transport)) return;
      if (n === null) {
        framer.end();
        host.ended();
        return;
      }
      messages = framer.push(buf.subarray(0, n));
      if (n === buf.length) {
        small = 0;
        if (n < READ_BUFFER_MAX) buf = new Uint8Array(Math.min(n * 4, READ_BUFFER_MAX));
      } else if (buf.length > READ_BUFFER_MIN) {
        small = n <= READ_BUFFER_MIN ? small + 1 : 0;
        if (small >= SHRINK_AFTER) {
          small = 0;
          buf = new Uint8Array(READ_BUFFER_MIN);
        }
      }
      // Indexed, not for-of: no iterator object per read.
      for (let i = 0; i < messages.length; i++) {
        host.dispatch(messages[i]);
        if (!host.isCurrent(transport)) return;
        if (host.takeCatchUp()) {
          // One read can hold thousands of events; let consumers drain their buffers
          // before delivering more. Microtasks, not a timer: setTimeout(0) sleeps
          // ~1-2 ms in Deno, which capped a flood at ~160k events/s.
          await catchUp(host);
          if (!host.isCurrent(transport)) return;
        }
      }
      messages = undefined;
      if (framer.failure) throw framer.failure;
    }
  } catch (err) {
    if (host.isCurrent(transport)) host.failed(err);
  }
}

/**
 * Yields microtasks while listeners' buffers keep shrinking: consumers that read
 * events without awaiting I/O drain them all. Stops as soon as a round makes no
 * progress (nobody reading, or a consumer waiting on I/O), so it never stalls
 * the connection, even for a full listener nobody reads. Only listeners that were
 * more than half full are counted (O(1) typically).
 */
async function catchUp(listeners: ReadLoopHost): Promise<void> {
  let left = listeners.behind();
  while (left > 0) {
    for (let i = 0; i < CATCH_UP_TICKS; i++) await null;
    const now = listeners.behind();
    if (now >= left) break;
    left = now;
  }
  listeners.clearBehind();
}
