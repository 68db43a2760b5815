/**
 * Splits a byte stream into lines in linear time, with a bound on the length
 * of one line (batch-mode `qmp shell` reads its commands this way).
 *
 * @module
 */
import { concatBytes } from "../../lib/bytes.ts";

/**
 * The longest line accepted: 64 MiB, QEMU's own limit for one JSON message
 * (`MAX_TOKEN_SIZE` in qobject/json-streamer.c); QEMU would refuse a longer
 * command anyway.
 */
export const MAX_LINE_BYTES = 64 * 1024 * 1024;

/** A line that was longer than the limit: its bytes were read and dropped. */
export class OversizeLine {
  /** Creates the marker for a dropped line of `bytes` bytes. */
  constructor(readonly bytes: number, readonly limit: number) {}

  /** A one-line description for an error message. */
  get message(): string {
    return `the line is ${this.bytes} bytes, over the ${mib(this.limit)} limit ` +
      `(QEMU's own limit for one command): not run`;
  }
}

function mib(n: number): string {
  return n % (1024 * 1024) === 0 ? `${n / 1024 / 1024} MiB` : `${n} byte`;
}

/**
 * Yields the lines of `stream` (without `\n` or `\r\n`), decoded as UTF-8;
 * a line over `maxBytes` comes as an {@link OversizeLine} instead, and memory
 * stays bounded by `maxBytes`. Each byte is looked at a constant number of
 * times, however the lines fall across chunks.
 */
export async function* readBoundedLines(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number = MAX_LINE_BYTES,
): AsyncGenerator<string | OversizeLine> {
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let size = 0; // bytes of the current line so far
  let dropping = false; // the current line is over the limit: count, do not keep
  const take = (bytes: Uint8Array) => {
    size += bytes.length;
    if (dropping) return;
    if (size > maxBytes + 1) { // + 1: a CR before the LF is not part of the line
      dropping = true;
      parts = [];
    } else if (bytes.length > 0) {
      parts.push(bytes);
    }
  };
  const finish = (): string | OversizeLine => {
    let line: string | OversizeLine;
    if (dropping) {
      line = new OversizeLine(size, maxBytes);
    } else {
      const whole = concatBytes(parts, size);
      const text = decoder.decode(whole);
      line = text.endsWith("\r") ? text.slice(0, -1) : text;
      if (typeof line === "string" && whole.length > maxBytes && !text.endsWith("\r")) {
        line = new OversizeLine(size, maxBytes);
      }
    }
    parts = [];
    size = 0;
    dropping = false;
    return line;
  };
  for await (const chunk of stream) {
    let from = 0;
    while (from < chunk.length) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl < 0) {
        // Copy: some streams reuse their buffers.
        take(chunk.slice(from));
        break;
      }
      take(chunk.subarray(from, nl));
      yield finish();
      from = nl + 1;
    }
  }
  if (size > 0 || parts.length > 0 || dropping) yield finish();
}
