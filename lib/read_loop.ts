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
import type { ListenerRegistry } from "./listener_registry.ts";
import type { Transport } from "./transport.ts";

/** First size of a connection's read buffer; a full read makes it 4× larger, up to the max. */
const READ_BUFFER_MIN = 4 * 1024;
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
  /** The listeners, to see whether their consumers are draining. */
  readonly listeners: ListenerRegistry;
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
  // Small while replies are small (an idle connection holds 4 KiB, not 64 KiB),
  // larger once a read fills it: floods and big replies still take few reads.
  let buf = new Uint8Array(READ_BUFFER_MIN);
  try {
    while (true) {
      const n = await transport.read(buf);
      if (!host.isCurrent(transport)) return;
      if (n === null) {
        framer.end();
        host.ended();
        return;
      }
      const messages = framer.push(buf.subarray(0, n));
      if (n === buf.length && n < READ_BUFFER_MAX) buf = new Uint8Array(n * 4);
      for (const m of messages) {
        host.dispatch(m);
        if (!host.isCurrent(transport)) return;
        if (host.takeCatchUp()) {
          // One read can hold thousands of events; let consumers drain their buffers
          // before delivering more. Microtasks, not a timer: setTimeout(0) sleeps
          // ~1-2 ms in Deno, which capped a flood at ~160k events/s.
          await catchUp(host.listeners);
          if (!host.isCurrent(transport)) return;
        }
      }
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
async function catchUp(listeners: ListenerRegistry): Promise<void> {
  let left = listeners.behind();
  while (left > 0) {
    for (let i = 0; i < CATCH_UP_TICKS; i++) await null;
    const now = listeners.behind();
    if (now >= left) break;
    left = now;
  }
  listeners.clearBehind();
}
