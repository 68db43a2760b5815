/**
 * QEMU's event lines, read without `JSON.parse` for the envelope. QEMU writes
 * every event in one fixed form:
 *
 * ```text
 * {"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}
 * {"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "RESET", "data": {...}}
 * ```
 *
 * {@link parseEventLine} reads exactly that form, with `JSON.parse` for the
 * `data` value only; in an event flood the envelope is most of the bytes, and
 * parsing it by hand halves the per-event cost. Anything else (other spacing,
 * other keys or order, escapes in the name, numbers that are not plain
 * integers) returns `undefined`, and the framer parses the line with
 * `JSON.parse` as before. What it returns is what `JSON.parse` returns for
 * the line: the same keys in the same order, the same values.
 *
 * @module
 */

const HEAD = '{"timestamp": {"seconds": ';
const MICRO = ', "microseconds": ';
const EVENT = '}, "event": "';
const DATA = ', "data": ';
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CLOSE_BRACE = 0x7d;
const MINUS = 0x2d;
const ZERO = 0x30;
/** Longest integer read by hand: 15 digits are always exact in a double. */
const MAX_DIGITS = 15;

/** The value of the last integer {@link integerEnd} read (saves an object per number). */
let lastInteger = 0;

/**
 * Reads a JSON integer (`-?(0|[1-9][0-9]*)`, at most {@link MAX_DIGITS} digits)
 * at `i`; returns the index after it (its value in {@link lastInteger}), or -1.
 */
function integerEnd(s: string, i: number, end: number): number {
  let j = i;
  const negative = s.charCodeAt(j) === MINUS;
  if (negative) j++;
  const first = j;
  let value = 0;
  for (; j < end; j++) {
    const d = s.charCodeAt(j) - ZERO;
    if (d < 0 || d > 9) break;
    value = value * 10 + d;
  }
  const digits = j - first;
  if (digits === 0 || digits > MAX_DIGITS || (digits > 1 && s.charCodeAt(first) === ZERO)) {
    return -1;
  }
  lastInteger = negative ? -value : value;
  return j;
}

/**
 * Parses `s.slice(start, end)` when it is an event line in QEMU's exact form
 * (see the module documentation); `undefined` when it is anything else. The
 * caller has checked that the text ends with `}` and holds no long integers.
 */
export function parseEventLine(
  s: string,
  start: number,
  end: number,
): Record<string, unknown> | undefined {
  if (!s.startsWith(HEAD, start)) return undefined;
  const afterSeconds = integerEnd(s, start + HEAD.length, end);
  if (afterSeconds < 0 || !s.startsWith(MICRO, afterSeconds)) return undefined;
  const seconds = lastInteger;
  const afterMicro = integerEnd(s, afterSeconds + MICRO.length, end);
  if (afterMicro < 0 || !s.startsWith(EVENT, afterMicro)) return undefined;
  const microseconds = lastInteger;
  const nameStart = afterMicro + EVENT.length;
  let q = nameStart;
  for (; q < end; q++) {
    const c = s.charCodeAt(q);
    if (c === QUOTE) break;
    if (c === BACKSLASH || c < 0x20) return undefined; // escapes, control characters: JSON.parse
  }
  if (q >= end) return undefined;
  const event = s.slice(nameStart, q);
  if (q + 2 === end && s.charCodeAt(q + 1) === CLOSE_BRACE) {
    return { timestamp: { seconds, microseconds }, event };
  }
  if (!s.startsWith(DATA, q + 1)) return undefined;
  let data: unknown;
  try {
    // One JSON value and nothing else up to the closing brace (the caller checked it is `}`).
    data = JSON.parse(s.slice(q + 1 + DATA.length, end - 1));
  } catch {
    return undefined; // not one value (e.g. more keys after data): JSON.parse decides
  }
  return { timestamp: { seconds, microseconds }, event, data };
}
