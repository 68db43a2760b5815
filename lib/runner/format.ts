/**
 * Value formatting and line diffs for assertion messages.
 *
 * @module
 */

import { plainEvent } from "../protocol.ts";

const IDENT = /^[A-Za-z_$][\w$]*$/;

/**
 * Formats a value for humans, JSON-like and multi-line, with object keys
 * sorted (so two objects diff by content, not key order). Handles
 * `undefined`, bigint, Date, RegExp, Error, Map, Set and cycles.
 */
export function formatValue(value: unknown, indent = ""): string {
  return fmt(value, indent, new Set());
}

function fmt(v: unknown, indent: string, seen: Set<unknown>): string {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "number":
      return Object.is(v, -0) ? "-0" : String(v);
    case "bigint":
      return `${v}n`;
    case "boolean":
      return String(v);
    case "undefined":
      return "undefined";
    case "symbol":
      return v.toString();
    case "function":
      return `[Function ${v.name || "(anonymous)"}]`;
  }
  if (v === null) return "null";
  v = plainEvent(v) ?? v; // a received event shows as the plain object, with its time
  if (v instanceof Date) return `Date(${isNaN(v.getTime()) ? "invalid" : v.toISOString()})`;
  if (v instanceof RegExp) return String(v);
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  if (seen.has(v)) return "[Circular]";
  seen.add(v);
  try {
    const inner = indent + "  ";
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => `${inner}${fmt(x, inner, seen)},`).join("\n")}\n${indent}]`;
    }
    if (v instanceof Map) {
      if (v.size === 0) return "Map {}";
      const rows = [...v].map(([k, x]) =>
        `${inner}${fmt(k, inner, seen)} => ${fmt(x, inner, seen)},`
      );
      return `Map {\n${rows.join("\n")}\n${indent}}`;
    }
    if (v instanceof Set) {
      if (v.size === 0) return "Set {}";
      return `Set {\n${
        [...v].map((x) => `${inner}${fmt(x, inner, seen)},`).join("\n")
      }\n${indent}}`;
    }
    if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
    const keys = Object.keys(v as object).sort();
    const proto = Object.getPrototypeOf(v);
    const prefix = proto && proto !== Object.prototype && proto.constructor?.name
      ? `${proto.constructor.name} `
      : "";
    if (keys.length === 0) return `${prefix}{}`;
    const rows = keys.map((k) =>
      `${inner}${IDENT.test(k) ? k : JSON.stringify(k)}: ${
        fmt((v as Record<string, unknown>)[k], inner, seen)
      },`
    );
    return `${prefix}{\n${rows.join("\n")}\n${indent}}`;
  } finally {
    seen.delete(v);
  }
}

/** Formats a value on one line, shortened to about `max` characters. */
export function formatShort(value: unknown, max = 160): string {
  let text: string;
  if (typeof value === "string") text = JSON.stringify(value);
  else {
    text = formatValue(value).replace(/\n\s*/g, " ").replace(/,\s*([}\]])/g, " $1");
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * A line diff of `expected` against `actual` (both formatted with
 * {@link formatValue}): lines only in expected start with `- `, lines only in
 * actual with `+ `, common lines with two spaces. Returns `undefined` when
 * both format identically (nothing a diff could show).
 */
export function diffValues(expected: unknown, actual: unknown): string | undefined {
  const a = typeof expected === "string" && typeof actual === "string" &&
      (expected.includes("\n") || actual.includes("\n"))
    ? [expected.split("\n"), actual.split("\n")]
    : [formatValue(expected).split("\n"), formatValue(actual).split("\n")];
  const [left, right] = a;
  if (left.join("\n") === right.join("\n")) return undefined;
  return ["- Expected", "+ Received", "", ...diffLines(left, right)].join("\n");
}

/** Diffs two line arrays (LCS); returns display lines prefixed `- `, `+ ` or `  `. */
export function diffLines(left: string[], right: string[]): string[] {
  const n = left.length;
  const m = right.length;
  if (n * m > 4_000_000) {
    return [...left.map((l) => `- ${l}`), ...right.map((l) => `+ ${l}`)];
  }
  // lcs[i][j]: LCS length of left[i..] and right[j..]
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = left[i] === right[j]
        ? lcs[i + 1][j + 1] + 1
        : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (left[i] === right[j]) {
      out.push(`  ${left[i]}`);
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push(`- ${left[i++]}`);
    } else {
      out.push(`+ ${right[j++]}`);
    }
  }
  while (i < n) out.push(`- ${left[i++]}`);
  while (j < m) out.push(`+ ${right[j++]}`);
  return out;
}
