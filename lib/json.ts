/**
 * JSON with exact integers.
 *
 * QMP carries int64 and uint64 values (sizes, offsets, counters, bitmaps,
 * `lbr-fmt` = 18446744073709551552) that a double cannot hold. `JSON.parse`
 * rounds them silently and `JSON.stringify` throws on a `bigint`, so qmpkit
 * reads and writes messages through this module:
 *
 * - {@link parseJson}: an integer literal outside the safe range
 *   (`Number.MIN_SAFE_INTEGER` to `Number.MAX_SAFE_INTEGER`, ±(2^53-1)) becomes
 *   a `bigint` with the exact value; every other number stays a `number`.
 *   So a `number` is always exact, and arithmetic on it is safe. Integers such
 *   as -2^63 that a double holds exactly are `bigint` too: they are unsafe to
 *   compute with and `JSON.stringify` would print them with rounded digits.
 * - {@link stringifyJson}: `JSON.stringify` that writes a `bigint` digit for
 *   digit and never turns a non-finite number into `null`.
 *
 * A number that is not an integer literal (`1.5`, `1e20`, `1e400`) is a float:
 * QEMU's `number` type is a double, so it is parsed as the nearest double, as
 * QEMU itself (`strtod`) and Python's `json` do. `1e400` is out of a double's
 * range: it parses as `Infinity`, and is written back as `1e999`, which every
 * JSON reader (QEMU's included) reads as infinity again. `NaN` has no JSON
 * form at all: writing it throws a `TypeError` instead of sending `null`.
 *
 * The common path costs next to nothing: {@link parseJson} takes the slow
 * path (a `JSON.parse` reviver that reads each number's source text) only
 * when the text holds a run of 16 or more digits, found by looking at one
 * character in 16; {@link stringifyJson} uses plain `JSON.stringify` unless it
 * throws (a `bigint`) or writes a `null` (maybe a non-finite number).
 *
 * @module
 */

/** The `JSON.rawJSON` API (TC39 "JSON.parse source text access"), missing from TypeScript's lib. */
const RawJson = JSON as unknown as { rawJSON(text: string): unknown };

/** Digits of the longest safe integer (9007199254740991). */
const SAFE_DIGITS = 16;

/** A run of 16+ digits that is not in a fraction, exponent or longer run: maybe an unsafe integer. */
const LONG_INTEGER = /(?<![\d.eE])\d{16,}(?![\d.eE])/;

/** A `null` value in `JSON.stringify` output (compact or indented); a string may match too. */
const NULL_VALUE = /(?:^|[:,[])\s*null/;

/** The source text of an integer literal. */
const INTEGER = /^-?\d+$/;

/** True for the code of an ASCII digit. */
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

// How the quick look works: a run of 16 digits covers a multiple of 16, so only those positions
// are read; a run of 16 around position i also covers i - 8 or i + 8, which rules out most short
// runs (timestamps) in two more reads; a run that may be long enough is then measured.

/**
 * True when `text` may hold an integer beyond the safe range (a run of 16 or
 * more digits outside a fraction or exponent); false means `JSON.parse` reads
 * it exactly.
 */
function mayHoldLongInteger(text: string): boolean {
  const n = text.length;
  for (let i = 0; i < n; i += SAFE_DIGITS) {
    if (!isDigit(text.charCodeAt(i))) continue;
    if (
      !(i >= 8 && isDigit(text.charCodeAt(i - 8))) &&
      !(i + 8 < n && isDigit(text.charCodeAt(i + 8)))
    ) continue;
    let a = i;
    while (a > 0 && isDigit(text.charCodeAt(a - 1))) a--;
    let b = i + 1;
    while (b < n && isDigit(text.charCodeAt(b))) b++;
    if (b - a >= SAFE_DIGITS) return LONG_INTEGER.test(text);
  }
  return false;
}

/**
 * The same quick look on UTF-8 bytes (cheaper than on the decoded string):
 * false means `JSON.parse` reads the message exactly; true means it holds a
 * run of 16+ digits, and {@link parseJson} should read it. For the framer.
 */
export function bytesMayHoldLongInteger(bytes: Uint8Array): boolean {
  const n = bytes.length;
  for (let i = 0; i < n; i += SAFE_DIGITS) {
    if (!isDigit(bytes[i])) continue;
    if (!(i >= 8 && isDigit(bytes[i - 8])) && !(i + 8 < n && isDigit(bytes[i + 8]))) continue;
    let a = i;
    while (a > 0 && isDigit(bytes[a - 1])) a--;
    let b = i + 1;
    while (b < n && isDigit(bytes[b])) b++;
    if (b - a >= SAFE_DIGITS) return true;
  }
  return false;
}

/** The reviver of the slow path: integer literals beyond the safe range become bigints. */
function exactIntegers(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    const source = context?.source;
    if (source !== undefined && INTEGER.test(source)) return BigInt(source);
  }
  return value;
}

/**
 * Parses JSON text like `JSON.parse`, except that integers beyond
 * ±(2^53-1) become exact `bigint`s (see the module documentation). Throws a
 * `SyntaxError` on invalid JSON, as `JSON.parse` does.
 *
 * @example
 * ```ts
 * import { parseJson } from "./json.ts";
 * parseJson('{"lbr-fmt": 18446744073709551552, "n": 42, "f": 0.5}');
 * // { "lbr-fmt": 18446744073709551552n, n: 42, f: 0.5 }
 * ```
 */
// deno-lint-ignore no-explicit-any
export function parseJson(text: string): any {
  return mayHoldLongInteger(text) ? JSON.parse(text, exactIntegers) : JSON.parse(text);
}

function exactReplacer(this: unknown, key: string, value: unknown): unknown {
  if (typeof value === "bigint") return RawJson.rawJSON(value.toString());
  if (typeof value === "number" && !Number.isFinite(value)) {
    if (Number.isNaN(value)) {
      throw new TypeError(
        `NaN${key === "" ? "" : ` (member ${JSON.stringify(key)})`} cannot be written as JSON,` +
          ` which has no NaN`,
      );
    }
    return RawJson.rawJSON(value > 0 ? "1e999" : "-1e999");
  }
  return value;
}

/**
 * Serializes a value like `JSON.stringify(value, null, space)`, except that a
 * `bigint` is written digit for digit, `±Infinity` as `±1e999` (read back as
 * infinity) and `NaN` throws a `TypeError` (JSON has no NaN; `JSON.stringify`
 * would write `null`). Values made with `JSON.rawJSON` are written verbatim.
 *
 * @example
 * ```ts
 * import { stringifyJson } from "./json.ts";
 * stringifyJson({ "max-bandwidth": 9007199254740993n }); // '{"max-bandwidth":9007199254740993}'
 * ```
 */
export function stringifyJson(value: unknown, space?: number | string): string {
  let text: string | undefined;
  try {
    // Without a replacer or indent V8 takes its fast path: keep the call as plain as that.
    text = space === undefined ? JSON.stringify(value) : JSON.stringify(value, null, space);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    // A bigint (or a cycle, which the exact path reports in turn).
    return JSON.stringify(value, exactReplacer, space);
  }
  // JSON.stringify writes NaN and ±Infinity as null: take the exact path when a null value
  // appears (not merely the word, as in "null-co").
  if (text !== undefined && text.includes("null") && NULL_VALUE.test(text)) {
    return JSON.stringify(value, exactReplacer, space);
  }
  return text as string;
}
