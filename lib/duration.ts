/**
 * Human-friendly durations: `"250ms"`, `"5s"`, `"1.5m"`, `"1h"`, `"1m30s"` or a
 * number of milliseconds.
 *
 * @module
 */

/** The longest duration timers support: 2^31-1 ms (about 24.8 days). */
export const MAX_DURATION_MS = 2_147_483_647;

/** A duration: milliseconds as a number, or a string such as `"500ms"`, `"30s"`, `"2m"`, `"1m30s"`. */
export type Duration = number | string;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)\s*(ms|s|m|h)/y;

/**
 * Converts a {@link Duration} to milliseconds. Throws a `RangeError` naming the
 * bad value when it cannot be parsed or is negative.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./duration.ts";
 * parseDuration("1m30s"); // 90000
 * parseDuration(250); // 250
 * ```
 */
export function parseDuration(value: Duration): number {
  const ms = parseDurationUnchecked(value);
  if (ms > MAX_DURATION_MS) {
    throw new RangeError(
      `Invalid duration ${
        JSON.stringify(value)
      }: longer than ${MAX_DURATION_MS} ms (about 24.8 days), ` +
        `which timers cannot wait`,
    );
  }
  return ms;
}

function parseDurationUnchecked(value: Duration): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(`Invalid duration ${value}: expected a non-negative number of ms`);
    }
    return value;
  }
  if (typeof value !== "string") {
    throw new RangeError(`Invalid duration ${String(value)}: expected a number or a string`);
  }
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  let total = 0;
  PART.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    PART.lastIndex = pos;
    const m = PART.exec(text);
    if (!m) {
      throw new RangeError(
        `Invalid duration "${value}": use a number of ms or forms like "500ms", "30s", "2m", "1h", "1m30s"`,
      );
    }
    total += Number(m[1]) * UNITS[m[2]];
    pos = PART.lastIndex;
    while (text[pos] === " ") pos++;
  }
  if (text.length === 0) throw new RangeError(`Invalid duration "": empty string`);
  return total;
}

/** Formats milliseconds for humans: `"850ms"`, `"1.25s"`, `"2m05s"`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${m}m${String(s).padStart(2, "0")}s`;
}
