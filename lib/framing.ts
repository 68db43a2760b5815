/**
 * Streaming framing of QMP's byte stream into JSON objects.
 *
 * QEMU terminates messages with CRLF, but a correct client must not rely on
 * lines: `pretty=on` monitors emit multi-line objects, and a read may hold half
 * a message or several. {@link JsonObjectFramer} tracks brace depth and string
 * state byte by byte, so it needs no look-ahead and parses each message once.
 * It is pure and synchronous: testable in memory, with no permissions.
 * Messages are parsed with exact integers (see `json.ts`).
 *
 * @module
 */
import { concatBytes } from "./bytes.ts";
import { ProtocolError } from "./errors.ts";
import { bytesMayHoldLongInteger, parseJson } from "./json.ts";
import { parseEventLine } from "./event_line.ts";

/** The default per-message size limit: 10 MiB (QEMU 7.2's largest reply, `query-qmp-schema`, is ~200 KB). */
export const DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024;

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Fast-path misses after which a framer scans bytes only. */
const MAX_MISSES = 8;
/** One strict UTF-8 decoder for every framer: decoding whole messages (no `stream`) keeps no state. */
const DECODER = new TextDecoder("utf-8", { fatal: true });
/**
 * The fast path's decoder: not strict, as `fatal` makes a decode ~6× slower even for ASCII.
 * An invalid byte becomes U+FFFD, which the fast path looks for (see `#lines`).
 */
const LENIENT = new TextDecoder("utf-8");

function isWhitespace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** Options for {@link JsonObjectFramer}. */
export interface FramerOptions {
  /** Largest message accepted, in bytes. Larger ones raise a {@link ProtocolError}. */
  maxMessageSize?: number;
}

/**
 * Splits a byte stream into top-level JSON objects and parses them.
 *
 * Feed it chunks with {@link JsonObjectFramer.push}; it returns the objects
 * completed by that chunk. Anything that is not a JSON object at top level
 * (garbage bytes, arrays, numbers), invalid JSON, or a message larger than
 * `maxMessageSize` throws a {@link ProtocolError} naming what arrived; the
 * framer is then unusable, as the stream can no longer be trusted.
 *
 * @example
 * ```ts
 * import { JsonObjectFramer } from "./framing.ts";
 * const framer = new JsonObjectFramer();
 * const enc = new TextEncoder();
 * framer.push(enc.encode('{"return": {}, "id": 1}\r\n{"eve')); // [{ return: {}, id: 1 }]
 * framer.push(enc.encode('nt": "STOP"}\r\n')); // [{ event: "STOP" }]
 * ```
 */
export class JsonObjectFramer {
  readonly #max: number;
  #depth = 0;
  #inString = false;
  #escape = false;
  /** Copies of the bytes of the message in progress that came in earlier chunks. */
  #parts: Uint8Array[] | undefined; // created when a message spans chunks
  #partsSize = 0;
  #failed: ProtocolError | undefined;
  /** Whole-line fast path (see `#lines`); off for good after {@link MAX_MISSES} misses. */
  #fast = true;
  #misses = 0;

  /** Creates a framer; see {@link FramerOptions}. */
  constructor(options?: FramerOptions) {
    this.#max = options?.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    if (!(this.#max > 0)) throw new RangeError("maxMessageSize must be a positive number of bytes");
  }

  /** Number of bytes of an incomplete message currently held. */
  get pending(): number {
    return this.#depth === 0 ? 0 : this.#partsSize;
  }

  /**
   * Consumes a chunk and returns every object it completed, in order. The
   * chunk may be reused by the caller afterwards: bytes kept across calls are
   * copied.
   */
  push(chunk: Uint8Array): Record<string, unknown>[] {
    if (this.#failed) throw this.#failed;
    const out: Record<string, unknown>[] = [];
    try {
      this.#scan(chunk, out);
    } catch (err) {
      // Objects completed before the bad bytes are still valid messages: return them,
      // and report the error through `failure` and on the next call.
      if (out.length === 0) throw err;
    }
    return out;
  }

  /**
   * The protocol error that stopped the framer, if any. Set when a chunk held
   * complete objects followed by bad bytes: `push` returned those objects, and
   * the caller should check this after handling them.
   */
  get failure(): ProtocolError | undefined {
    return this.#failed;
  }

  #scan(chunk: Uint8Array, out: Record<string, unknown>[]): void {
    const n = chunk.length;
    let i = 0;
    let start = 0; // start of the current message within this chunk
    let fast = this.#fast;
    while (i < n) {
      if (this.#depth === 0) {
        if (fast) {
          const next = this.#lines(chunk, i, out);
          if (next < 0) {
            i = ~next;
            fast = false; // no newline after this message start: scan the rest
          } else {
            i = next;
            if (i >= n) break;
            fast = this.#fast;
          }
        }
        const b = chunk[i];
        if (isWhitespace(b)) {
          i++;
          continue;
        }
        if (b !== OPEN_BRACE) throw this.#fail(describeGarbage(chunk, i));
        start = i;
        this.#depth = 1;
        i++;
      }
      // Inside an object: scan for the brace that closes it.
      let depth = this.#depth;
      let inString = this.#inString;
      let escape = this.#escape;
      for (; i < n; i++) {
        const b = chunk[i];
        if (inString) {
          if (escape) escape = false;
          else if (b === BACKSLASH) escape = true;
          else if (b === QUOTE) inString = false;
        } else if (b === QUOTE) {
          inString = true;
        } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
          depth++;
        } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
          depth--;
          if (depth === 0) break;
        }
      }
      this.#depth = depth;
      this.#inString = inString;
      this.#escape = escape;
      if (depth === 0) {
        i++; // include the closing brace
        const size = this.#partsSize + (i - start);
        if (size > this.#max) throw this.#fail(oversize(size, this.#max));
        out.push(this.#parse(chunk.subarray(start, i)));
      } else {
        // Message continues in a later chunk: keep a copy of what we have.
        const size = this.#partsSize + (n - start);
        if (size > this.#max) throw this.#fail(oversize(size, this.#max));
        (this.#parts ??= []).push(chunk.slice(start, n));
        this.#partsSize = size;
      }
    }
  }

  /**
   * Fast path for QEMU's own output (compact ASCII, one message per CRLF-terminated
   * line): decodes the rest of the chunk once and hands each whole line ending in
   * `}` straight to `JSON.parse`, which also proves it is exactly one object, the
   * one the byte scan would find (event lines in QEMU's exact form go to
   * `parseEventLine`, which returns the same object). Returns the index of the first byte left to the
   * byte scan (a message that is not a whole line, anything unexpected), or its
   * bitwise complement when no newline follows a message start (the byte scan then
   * takes the rest of the chunk). Misses (e.g. a `pretty=on` monitor, non-ASCII
   * output) turn the fast path off for good after {@link MAX_MISSES}.
   */
  #lines(chunk: Uint8Array, from: number, out: Record<string, unknown>[]): number {
    const bytes = from === 0 ? chunk : chunk.subarray(from);
    const text = LENIENT.decode(bytes);
    // Byte offsets are character offsets only in ASCII. Every byte gave one character only
    // if the lengths match (a valid multi-byte sequence gives fewer) and none was invalid
    // (an invalid byte gives U+FFFD, as does a valid U+FFFD in 3 bytes). The search for
    // U+FFFD costs nothing when the text is ASCII: V8 knows at once that a one-byte string
    // cannot hold it. A miss goes to the byte scan, whose strict decode reports bad bytes.
    if (text.length !== bytes.length || text.indexOf("\uFFFD") >= 0) return this.#miss(from);
    const m = text.length;
    /** Exact integers: one quick look at the whole chunk spares each line its own. */
    let exact: boolean | undefined;
    let p = 0;
    while (p < m) {
      const c = text.charCodeAt(p);
      if (isWhitespace(c)) {
        p++;
        continue;
      }
      if (c !== OPEN_BRACE) return from + p; // the byte scan reports it
      const nl = text.indexOf("\n", p);
      if (nl < 0) return ~(from + p);
      let end = nl;
      while (isWhitespace(text.charCodeAt(end - 1))) end--;
      if (text.charCodeAt(end - 1) !== CLOSE_BRACE || end - p > this.#max) {
        return this.#miss(from + p);
      }
      let msg: Record<string, unknown>;
      try {
        exact ??= bytesMayHoldLongInteger(bytes);
        // QEMU's event lines are read by hand but for their data (see event_line.ts).
        msg = exact
          ? parseJson(text.slice(p, end))
          : parseEventLine(text, p, end) ?? JSON.parse(text.slice(p, end));
      } catch {
        return this.#miss(from + p);
      }
      out.push(msg);
      p = nl + 1;
    }
    return from + m;
  }

  #miss(at: number): number {
    if (++this.#misses >= MAX_MISSES) this.#fast = false;
    return at;
  }

  /**
   * Declares the end of the stream. Throws a {@link ProtocolError} if a
   * message was left incomplete (the peer closed mid-message).
   */
  end(): void {
    if (this.#failed) throw this.#failed;
    if (this.#depth !== 0) {
      const head = new TextDecoder().decode(this.#parts?.[0]?.subarray(0, 60) ?? new Uint8Array());
      throw this.#fail(
        new ProtocolError(
          `Connection ended in the middle of a message (${this.#partsSize} bytes received, ` +
            `starting ${JSON.stringify(head)}): QEMU exited or the connection was cut`,
          { received: head },
        ),
      );
    }
  }

  #parse(tail: Uint8Array): Record<string, unknown> {
    let bytes = tail;
    if (this.#parts !== undefined && this.#parts.length > 0) {
      this.#parts.push(tail);
      bytes = concatBytes(this.#parts, this.#partsSize + tail.length);
      this.#parts = undefined;
      this.#partsSize = 0;
    }
    let text: string;
    try {
      text = DECODER.decode(bytes);
    } catch (cause) {
      throw this.#fail(
        new ProtocolError("Received a message that is not valid UTF-8", {
          cause,
          received: excerpt(new TextDecoder().decode(bytes)),
        }),
      );
    }
    try {
      return bytesMayHoldLongInteger(bytes) ? parseJson(text) : JSON.parse(text);
    } catch (cause) {
      throw this.#fail(
        new ProtocolError(`Received invalid JSON: ${excerpt(text)}`, {
          cause,
          received: excerpt(text),
        }),
      );
    }
  }

  #fail(error: ProtocolError): ProtocolError {
    this.#failed = error;
    this.#parts = undefined;
    this.#partsSize = 0;
    return error;
  }
}

function oversize(size: number, max: number): ProtocolError {
  return new ProtocolError(
    `Received a message larger than the ${max}-byte limit (at least ${size} bytes). ` +
      `Raise maxMessageSize if this peer is trusted and really sends messages this large`,
  );
}

function describeGarbage(chunk: Uint8Array, at: number): ProtocolError {
  const text = new TextDecoder().decode(chunk.subarray(at, at + 60));
  const kind = text[0] === "[" || text[0] === '"' || /^[-\d]|^true|^false|^null/.test(text)
    ? "a JSON value that is not an object"
    : "bytes that are not JSON";
  return new ProtocolError(
    `Expected a JSON object from the QMP server but received ${kind}: ${JSON.stringify(text)}` +
      ` (is this address really a QMP monitor?)`,
    { received: text },
  );
}

/** Shortens `text` to at most `max` characters for error messages. */
export function excerpt(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`;
}
