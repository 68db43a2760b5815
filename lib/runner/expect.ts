/**
 * Typed assertions: `expect(value).toMatchObject(...)` and friends. The
 * matchers are typed by the value, so a typo in an expected QMP enum value
 * (`{ status: "pausd" }` against a `StatusInfo`) fails `deno check`.
 *
 * @module
 */
import { ExpectationError } from "./errors.ts";
import { diffValues, formatShort } from "./format.ts";
import { plainEvent } from "../protocol.ts";

/**
 * A recursive partial of `T`: every object member optional, arrays matched
 * element-wise. Used by {@link Expectation.toMatchObject} and event `where`
 * patterns.
 */
export type DeepPartial<T> = T extends
  string | number | bigint | boolean | symbol | null | undefined ? T
  : T extends (...args: never[]) => unknown ? T
  : T extends readonly (infer E)[] ? readonly DeepPartial<E>[]
  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> }
  : T;

/** What {@link Expectation.toContain} accepts for a value of type `T`. */
export type ContainItem<T> = unknown extends T ? unknown
  : NonNullable<T> extends string ? string
  : NonNullable<T> extends readonly (infer E)[] ? DeepPartial<E>
  : NonNullable<T> extends ReadonlySet<infer E> ? E
  : NonNullable<T> extends Iterable<infer E> ? E
  : never;

/** The operand type of the ordering matchers: numbers (or bigints) only. */
export type Comparable<T> = unknown extends T ? number | bigint
  : NonNullable<T> extends number | bigint ? number | bigint
  : never;

/** The pattern type of {@link Expectation.toMatch}: only for strings. */
export type StringPattern<T> = unknown extends T ? string | RegExp
  : NonNullable<T> extends string ? string | RegExp
  : never;

/** The operand of {@link Expectation.toHaveLength}: only for values with a `length`. */
export type LengthOperand<T> = unknown extends T ? number
  : NonNullable<T> extends { readonly length: number } ? number
  : never;

/**
 * Assertions on one value. Each matcher throws an {@link ExpectationError}
 * (with expected, actual and a diff) when it fails; `.not` inverts them.
 *
 * @example
 * ```ts ignore
 * const status = await t.qmp.execute("query-status");
 * t.expect(status).toMatchObject({ status: "paused", running: false });
 * t.expect(status.status).not.toBe("running");
 * ```
 */
export interface Expectation<T> {
  /** The same matchers, inverted. */
  readonly not: Expectation<T>;
  /** Identity (`Object.is`): for primitives, or the very same object. */
  toBe(expected: T): void;
  /** Deep equality (members whose value is `undefined` count as absent). */
  toEqual(expected: T): void;
  /**
   * Deep partial match: every member of `expected` must match, recursively;
   * arrays match element-wise and must have the same length. Other members
   * of the value are ignored.
   */
  toMatchObject(expected: DeepPartial<T>): void;
  /**
   * A string contains a substring; an array has an element matching `item`
   * (objects deep-partially, like {@link toMatchObject}; others by identity);
   * a Set or iterable has the item.
   */
  toContain(item: ContainItem<T>): void;
  /** The number is `> n`. */
  toBeGreaterThan(n: Comparable<T>): void;
  /** The number is `< n`. */
  toBeLessThan(n: Comparable<T>): void;
  /** The value is not `undefined`. */
  toBeDefined(): void;
  /** The value is truthy. */
  toBeTruthy(): void;
  /** The string matches a RegExp, or contains a string. */
  toMatch(pattern: StringPattern<T>): void;
  /** The value's `length` (string, array) is `n`. */
  toHaveLength(n: LengthOperand<T>): void;
}

/**
 * Starts an assertion on `actual`. The optional `label` prefixes failure
 * messages (e.g. `"status after stop"`).
 *
 * @example
 * ```ts ignore
 * expect(await qmp.execute("query-status")).toMatchObject({ status: "running" });
 * expect([1, 2, 3]).toContain(2);
 * ```
 */
export function expect<T>(actual: T, label?: string): Expectation<T> {
  return new Matchers<T>(actual, false, label);
}

class Matchers<T> implements Expectation<T> {
  readonly #actual: T;
  readonly #negated: boolean;
  readonly #label: string | undefined;

  constructor(actual: T, negated: boolean, label: string | undefined) {
    this.#actual = actual;
    this.#negated = negated;
    this.#label = label;
  }

  get not(): Expectation<T> {
    return new Matchers<T>(this.#actual, !this.#negated, this.#label);
  }

  toBe(expected: T): void {
    const a = this.#actual;
    const pass = Object.is(a, expected);
    const bothObjects = typeof a === "object" && a !== null && typeof expected === "object" &&
      expected !== null;
    this.#check(pass, "toBe", expected, {
      msg: bothObjects && equals(a, expected)
        ? `expected the same object (identity), got an equal but different one; use toEqual`
        : `expected ${formatShort(a)} to be ${formatShort(expected)}`,
      notMsg: `expected value not to be ${formatShort(expected)}`,
      diff: !pass && (bothObjects || typeof a === "string") ? diffValues(expected, a) : undefined,
    });
  }

  toEqual(expected: T): void {
    const pass = equals(this.#actual, expected);
    this.#check(pass, "toEqual", expected, {
      msg: `expected ${formatShort(this.#actual, 80)} to equal ${formatShort(expected, 80)}`,
      notMsg: `expected value not to equal ${formatShort(expected)}`,
      diff: pass ? undefined : diffValues(expected, this.#actual),
    });
  }

  toMatchObject(expected: DeepPartial<T>): void {
    const a = this.#actual;
    const isObj = typeof a === "object" && a !== null;
    const pass = isObj && matchObject(a, expected);
    this.#check(pass, "toMatchObject", expected, {
      msg: isObj
        ? `expected ${formatShort(a, 80)} to match ${formatShort(expected, 80)}`
        : `expected an object to match ${formatShort(expected, 80)}, got ${formatShort(a)}`,
      notMsg: `expected value not to match ${formatShort(expected)}`,
      diff: pass || !isObj
        ? undefined
        : withNote(diffValues(expected, project(a, expected)), "(only the keys in the pattern)"),
    });
  }

  toContain(item: ContainItem<T>): void {
    const a = this.#actual as unknown;
    let pass = false;
    if (typeof a === "string") pass = typeof item === "string" && a.includes(item);
    else if (Array.isArray(a)) pass = a.some((x) => containsMatch(x, item));
    else if (a instanceof Set) pass = a.has(item);
    else if (a !== null && typeof a === "object" && Symbol.iterator in a) {
      for (const x of a as Iterable<unknown>) if (Object.is(x, item)) pass = true;
    }
    this.#check(pass, "toContain", item, {
      msg: `expected ${formatShort(a)} to contain ${formatShort(item)}`,
      notMsg: `expected ${formatShort(a)} not to contain ${formatShort(item)}`,
    });
  }

  toBeGreaterThan(n: Comparable<T>): void {
    this.#compare(n, "toBeGreaterThan", "greater than", (a, b) => a > b);
  }

  toBeLessThan(n: Comparable<T>): void {
    this.#compare(n, "toBeLessThan", "less than", (a, b) => a < b);
  }

  toBeDefined(): void {
    const a = this.#actual;
    this.#check(a !== undefined, "toBeDefined", undefined, {
      msg: `expected a defined value, got undefined`,
      notMsg: `expected undefined, got ${formatShort(a)}`,
    });
  }

  toBeTruthy(): void {
    const a = this.#actual;
    this.#check(Boolean(a), "toBeTruthy", undefined, {
      msg: `expected ${formatShort(a)} to be truthy`,
      notMsg: `expected ${formatShort(a)} to be falsy`,
    });
  }

  toMatch(pattern: StringPattern<T>): void {
    const a = this.#actual as unknown;
    const p = pattern as string | RegExp;
    const pass = typeof a === "string" &&
      (typeof p === "string" ? a.includes(p) : new RegExp(p.source, p.flags).test(a));
    this.#check(pass, "toMatch", p, {
      msg: typeof a === "string"
        ? `expected ${formatShort(a)} to match ${typeof p === "string" ? formatShort(p) : p}`
        : `expected a string to match ${String(p)}, got ${formatShort(a)}`,
      notMsg: `expected ${formatShort(a)} not to match ${String(p)}`,
    });
  }

  toHaveLength(n: LengthOperand<T>): void {
    const a = this.#actual as unknown;
    const len = (typeof a === "string" || (typeof a === "object" && a !== null)) &&
        typeof (a as { length?: unknown }).length === "number"
      ? (a as { length: number }).length
      : undefined;
    this.#check(len === n, "toHaveLength", n, {
      msg: len === undefined
        ? `expected a value with a length, got ${formatShort(a)}`
        : `expected length ${n}, got ${len}: ${formatShort(a)}`,
      notMsg: `expected length other than ${n}: ${formatShort(a)}`,
    });
  }

  #compare(
    n: unknown,
    matcher: string,
    words: string,
    op: (a: number | bigint, b: number | bigint) => boolean,
  ): void {
    const a = this.#actual as unknown;
    const numeric = (x: unknown): x is number | bigint =>
      typeof x === "number" || typeof x === "bigint";
    if (!numeric(n)) throw new TypeError(`${matcher} needs a number, got ${formatShort(n)}`);
    const pass = numeric(a) && op(a, n);
    this.#check(pass, matcher, n, {
      msg: numeric(a)
        ? `expected ${formatShort(a)} to be ${words} ${formatShort(n)}`
        : `expected a number ${words} ${formatShort(n)}, got ${formatShort(a)}`,
      notMsg: `expected ${formatShort(a)} not to be ${words} ${formatShort(n)}`,
    });
  }

  #check(
    pass: boolean,
    matcher: string,
    expected: unknown,
    text: { msg: string; notMsg: string; diff?: string },
  ): void {
    if (pass !== this.#negated) return;
    const label = this.#label ? `${this.#label}: ` : "";
    throw new ExpectationError(`${label}${this.#negated ? text.notMsg : text.msg}`, {
      matcher: this.#negated ? `not.${matcher}` : matcher,
      expected,
      actual: this.#actual,
      diff: this.#negated ? undefined : text.diff,
    });
  }
}

function withNote(diff: string | undefined, note: string): string | undefined {
  return diff === undefined ? undefined : `${diff}\n${note}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Deep equality: primitives by `Object.is`, arrays element-wise, plain
 * objects by their defined members (a member set to `undefined` equals a
 * missing one), Date by time, RegExp by source and flags, Map and Set by
 * content.
 */
export function equals(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  // Received events keep `time` on their prototype: compare them as the plain objects.
  a = plainEvent(a) ?? a;
  b = plainEvent(b) ?? b;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
      a.every((x, i) => equals(x, b[i]));
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  }
  if (a instanceof RegExp || b instanceof RegExp) {
    return a instanceof RegExp && b instanceof RegExp && String(a) === String(b);
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !equals(v, b.get(k))) return false;
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) return false;
    for (const v of a) if (!b.has(v)) return false;
    return true;
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const k of keys) if (!equals(ra[k], rb[k])) return false;
  return true;
}

/**
 * Deep partial match, as {@link Expectation.toMatchObject}: every member of
 * `pattern` must match; plain-object members recursively, arrays
 * element-wise with equal length, anything else by {@link equals}.
 */
export function matchObject(actual: unknown, pattern: unknown): boolean {
  if (Array.isArray(pattern)) {
    return Array.isArray(actual) && actual.length === pattern.length &&
      pattern.every((p, i) => matchObject(actual[i], p));
  }
  if (isPlainObject(pattern)) {
    if (typeof actual !== "object" || actual === null || Array.isArray(actual)) return false;
    const rec = actual as Record<string, unknown>;
    return Object.entries(pattern).every(([k, p]) =>
      (p === undefined ? !(k in rec) || rec[k] === undefined : k in rec) && matchObject(rec[k], p)
    );
  }
  return equals(actual, pattern);
}

function containsMatch(element: unknown, item: unknown): boolean {
  if (typeof item === "object" && item !== null) return matchObject(element, item);
  return Object.is(element, item);
}

/** The part of `actual` that `pattern` talks about, for a focused diff. */
function project(actual: unknown, pattern: unknown): unknown {
  if (Array.isArray(pattern) && Array.isArray(actual)) {
    return actual.map((x, i) => (i < pattern.length ? project(x, pattern[i]) : x));
  }
  if (isPlainObject(pattern) && typeof actual === "object" && actual !== null) {
    const rec = actual as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(pattern)) if (k in rec) out[k] = project(rec[k], pattern[k]);
    return out;
  }
  return actual;
}
