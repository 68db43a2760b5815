/**
 * Pure parsing for the `qmp` CLI: qmp-shell style `key=value` arguments with
 * dotted keys, shell-line tokenizing, raw JSON commands and the
 * `transaction( ... )` syntax. No I/O: everything here is unit-testable.
 *
 * @module
 */
import { parseJson } from "../../lib/json.ts";
import { UsageError } from "./parse_args.ts";

// Defined in parse_args.ts, which every command loads (this module is loaded only when
// there are arguments to parse); exported here too, where it has always been.
export { UsageError };

/** A token of a shell line, with its position in the line. */
export interface Token {
  /** The token text, quotes kept as typed. */
  text: string;
  /** Offset of the first character in the line. */
  start: number;
  /** Offset just after the last character. */
  end: number;
}

/**
 * Splits a shell line into whitespace-separated tokens, like qmp-shell, but
 * whitespace inside quotes (`"..."`, `'...'`) or inside JSON brackets
 * (`{...}`, `[...]`) does not split. Quotes are kept in the token text (the
 * value parser interprets them). An unterminated quote or bracket is a
 * {@link UsageError}, as in qmp-shell; with `partial` (a line still being
 * typed, for completion) it extends to the end of the line.
 *
 * @example
 * ```ts
 * tokenize(`blockdev-add driver=null-co opts={"a": 1}`).map((t) => t.text);
 * // ["blockdev-add", "driver=null-co", 'opts={"a": 1}']
 * ```
 */
export function tokenize(line: string, options: { partial?: boolean } = {}): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && isSpace(line[i])) i++;
    if (i >= n) break;
    const start = i;
    let depth = 0;
    while (i < n) {
      const c = line[i];
      if (c === '"' || c === "'") {
        i = skipQuoted(line, i, options.partial === true);
        continue;
      }
      if (c === "{" || c === "[") depth++;
      else if ((c === "}" || c === "]") && depth > 0) depth--;
      else if (depth === 0 && isSpace(c)) break;
      i++;
    }
    if (depth > 0 && !options.partial) {
      throw new UsageError(
        `Unbalanced brackets in ${JSON.stringify(line.slice(start, i))}: close every { and [`,
      );
    }
    tokens.push({ text: line.slice(start, i), start, end: i });
  }
  return tokens;
}

function isSpace(c: string): boolean {
  return c === " " || c === "\t" || c === "\n" || c === "\r";
}

/** Returns the offset after the quoted string starting at `i` (backslash escapes honoured). */
function skipQuoted(s: string, i: number, partial: boolean): number {
  const q = s[i];
  const start = i;
  i++;
  while (i < s.length && s[i] !== q) {
    if (s[i] === "\\") i++;
    i++;
  }
  if (i >= s.length) {
    if (partial) return s.length; // a line still being typed (completion)
    // As qmp-shell (shlex): an unclosed quote is an error, never "the rest of the line".
    throw new UsageError(`No closing quotation for ${q} in ${JSON.stringify(s.slice(start))}`);
  }
  return i + 1;
}

/**
 * Splits a command line into arguments the way a POSIX shell would for simple
 * cases (whitespace separates; `'...'` is literal; `"..."` honours `\"` and
 * `\\`; a backslash outside quotes escapes the next character). Used for
 * `--launch-args`.
 *
 * @example
 * ```ts
 * shellSplit(`-M pc -name "my vm"`); // ["-M", "pc", "-name", "my vm"]
 * ```
 */
export function shellSplit(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let inToken = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (isSpace(c)) {
      if (inToken) out.push(cur);
      cur = "";
      inToken = false;
      continue;
    }
    inToken = true;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new UsageError(`Unterminated ' in ${JSON.stringify(line)}`);
      cur += line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) i++;
        cur += line[i];
        i++;
      }
      if (i >= line.length) throw new UsageError(`Unterminated " in ${JSON.stringify(line)}`);
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
    } else {
      cur += c;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

/**
 * Parses the value of a `key=value` argument:
 * - JSON literals when they parse: numbers, `true`, `false`, `null`,
 *   `"a JSON string"`, `{...}` and `[...]`; integers beyond 2^53 are exact
 *   `bigint`s (as everywhere in qmpkit, see `lib/json.ts`);
 * - `'single quoted'` is a literal string (quotes removed);
 * - anything else is the string itself (`driver=usb-tablet`).
 *
 * A value starting with `{` or `[` that is not valid JSON is an error (send
 * such a string as `"..."`), not silently a string.
 */
export function parseValue(raw: string, key = "value"): unknown {
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (raw === "null") return null;
  if (NUMBER.test(raw)) {
    const n = Number(raw);
    // Integers beyond 2^53 (uint64 sizes, bandwidths) are sent digit for digit.
    if (!Number.isSafeInteger(n) && /^-?\d+$/.test(raw)) return BigInt(raw);
    if (Number.isFinite(n)) return n;
  }
  const first = raw[0];
  if (first === "{" || first === "[") {
    try {
      return parseJson(raw);
    } catch (e) {
      throw new UsageError(
        `Invalid JSON for ${key}: ${(e as Error).message}` +
          ` (to send a string that starts with ${first}, write it as a JSON string: "${first}...")`,
      );
    }
  }
  if (first === '"' && raw.length >= 2 && raw.endsWith('"')) {
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw new UsageError(`Invalid JSON string for ${key}: ${(e as Error).message}`);
    }
  }
  if (first === "'" && raw.length >= 2 && raw.endsWith("'")) return raw.slice(1, -1);
  return raw;
}

/** True for a plain JSON object (not an array, not null). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Sets `key` (possibly dotted: `file.filename`) to `value` in `target`,
 * creating nested objects. Throws {@link UsageError} when the key was already
 * set, or is used both as a leaf and as an object (`a=1 a.b=2`).
 */
export function setDotted(target: Record<string, unknown>, key: string, value: unknown): void {
  const path = key.split(".");
  if (path.some((p) => p === "")) {
    throw new UsageError(`Invalid argument name ${JSON.stringify(key)}: empty path component`);
  }
  let obj = target;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i];
    const existing = obj[seg];
    if (existing === undefined) {
      const child: Record<string, unknown> = {};
      obj[seg] = child;
      obj = child;
    } else if (isPlainObject(existing) && !FROZEN.has(existing)) {
      obj = existing;
    } else {
      throw new UsageError(
        `Cannot use "${path.slice(0, i + 1).join(".")}" as both a value and an object`,
      );
    }
  }
  const leaf = path[path.length - 1];
  if (leaf in obj) {
    const existing = obj[leaf];
    if (isPlainObject(existing) && !FROZEN.has(existing)) {
      throw new UsageError(`Cannot use "${key}" as both a value and an object`);
    }
    throw new UsageError(`Argument "${key}" is given more than once`);
  }
  obj[leaf] = value;
  if (isPlainObject(value)) FROZEN.add(value);
}

/** Objects given whole as a value (`a={"b":1}`): dotted keys may not extend them. */
const FROZEN = new WeakSet<object>();

/**
 * Builds an arguments object from `key=value` strings (see {@link parseValue}
 * and {@link setDotted}), optionally on top of `base` (from `--args JSON`).
 *
 * @example
 * ```ts
 * parseKeyValues(["driver=file", "file.filename=/tmp/x", "read-only=true"]);
 * // { driver: "file", file: { filename: "/tmp/x" }, "read-only": true }
 * ```
 */
export function parseKeyValues(
  items: readonly string[],
  base: Record<string, unknown> = {},
): Record<string, unknown> {
  const out = copyJson(base) as Record<string, unknown>;
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq < 0) {
      throw new UsageError(
        `Expected key=value, got ${JSON.stringify(item)}` +
          (item.includes(":") ? " (did you mean key=value instead of key:value?)" : ""),
      );
    }
    const key = item.slice(0, eq);
    if (key === "") throw new UsageError(`Missing argument name in ${JSON.stringify(item)}`);
    const raw = item.slice(eq + 1);
    if (raw[0] === "{" || raw[0] === "[") {
      // The arguments object, one level per dotted segment, then the value's own nesting.
      const depth = key.split(".").length + jsonNestingDepth(raw);
      if (depth > MAX_ARGUMENTS_DEPTH) throw tooDeep(`arguments with ${key}=`, depth);
    }
    setDotted(out, key, parseValue(item.slice(eq + 1), key));
  }
  return out;
}

/**
 * QEMU's JSON parser refuses a message nested deeper than this
 * (`MAX_NESTING` in qobject/json-streamer.c): "JSON nesting depth limit
 * exceeded".
 */
export const QEMU_MAX_NESTING = 1024;

/**
 * The deepest `arguments` object QEMU accepts, counting the object itself as
 * level 1: the command message around it is one more level of
 * {@link QEMU_MAX_NESTING}.
 */
export const MAX_ARGUMENTS_DEPTH = QEMU_MAX_NESTING - 1;

/**
 * How deeply `{`/`[` nest in JSON text (strings skipped), in one linear pass,
 * without parsing: `{}` is 1, `{"a": [1]}` is 2, a scalar is 0.
 */
export function jsonNestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // a string: skip to its closing quote
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) {
        if (text.charCodeAt(i) === 0x5c) i++;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) max = depth;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return max;
}

function tooDeep(what: string, depth: number): UsageError {
  return new UsageError(
    `${what}: nested ${depth} levels deep; QEMU accepts at most ${MAX_ARGUMENTS_DEPTH} ` +
      `(its JSON parser allows ${QEMU_MAX_NESTING} levels per message, and the message is one)`,
  );
}

/** Parses `--args` JSON: it must be an object, nested no deeper than QEMU accepts. */
export function parseArgsJson(text: string): Record<string, unknown> {
  const depth = jsonNestingDepth(text);
  if (depth > MAX_ARGUMENTS_DEPTH) throw tooDeep("--args", depth);
  let v: unknown;
  try {
    v = parseJson(text); // integers beyond 2^53 stay exact
  } catch (e) {
    throw new UsageError(`--args is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(v)) throw new UsageError(`--args must be a JSON object, got ${text}`);
  return v;
}

/** A command ready to send. */
export interface ParsedCommand {
  /** Command name. */
  execute: string;
  /** Arguments (omitted when there are none). */
  arguments?: Record<string, unknown>;
}

/**
 * Parses a raw JSON command line (`{"execute": "query-status", "arguments": {...}}`).
 * An `id` member is accepted and ignored (the client assigns ids).
 */
export function parseJsonCommand(line: string): ParsedCommand {
  const depth = jsonNestingDepth(line);
  if (depth > QEMU_MAX_NESTING) {
    throw new UsageError(
      `the command: nested ${depth} levels deep; QEMU's JSON parser accepts at most ` +
        `${QEMU_MAX_NESTING}`,
    );
  }
  let msg: unknown;
  try {
    msg = parseJson(line);
  } catch (e) {
    throw new UsageError(`Invalid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(msg)) throw new UsageError(`A JSON command must be an object`);
  if ("exec-oob" in msg) {
    throw new UsageError(`exec-oob is not supported here; use "execute"`);
  }
  for (const k of Object.keys(msg)) {
    if (k !== "execute" && k !== "arguments" && k !== "id") {
      throw new UsageError(`Unexpected member "${k}" (allowed: execute, arguments, id)`);
    }
  }
  if (typeof msg.execute !== "string" || msg.execute === "") {
    throw new UsageError(`A JSON command needs "execute": "<command name>"`);
  }
  if (msg.arguments !== undefined && !isPlainObject(msg.arguments)) {
    throw new UsageError(`"arguments" must be an object`);
  }
  return msg.arguments === undefined
    ? { execute: msg.execute }
    : { execute: msg.execute, arguments: msg.arguments as Record<string, unknown> };
}

/** One action of a transaction: `{type, data}`. */
export interface TransactionAction {
  /** The action type, e.g. `block-dirty-bitmap-add`. */
  type: string;
  /** The action's arguments. */
  data: Record<string, unknown>;
}

/** What {@link ShellParser.feed} made of a line. */
export type ShellParse =
  /** Nothing to run (blank line or comment). */
  | { kind: "empty" }
  /** Inside `transaction(`: more actions expected; prompt with `TRANS>`. */
  | { kind: "continue" }
  /** A command to run. */
  | { kind: "command"; command: ParsedCommand };

/**
 * Stateful parser of shell lines in QMP mode: `cmd key=value ...`, raw JSON
 * commands, and transactions, either on one line —
 * `transaction( action-a k=v, action-b k=v )` — or over several, like
 * qmp-shell:
 *
 * ```text
 * (QEMU) transaction(
 * TRANS> block-dirty-bitmap-add node=n0 name=b0
 * TRANS> block-dirty-bitmap-add node=n0 name=b1
 * TRANS> )
 * ```
 *
 * Both give `{"execute": "transaction", "arguments": {"actions": [{"type", "data"}, ...]}}`.
 * A parse error inside a transaction abandons the whole transaction.
 */
export class ShellParser {
  #actions: TransactionAction[] | undefined;
  /** After an error inside a multi-line transaction: skip lines up to its `)`. */
  #discarding = false;

  /** True while inside a multi-line `transaction(`. */
  get inTransaction(): boolean {
    return this.#actions !== undefined || this.#discarding;
  }

  /** Number of actions collected so far in the open transaction. */
  get pendingActions(): number {
    return this.#actions?.length ?? 0;
  }

  /** Abandons an open transaction (e.g. on Ctrl-C). */
  reset(): void {
    this.#actions = undefined;
    this.#discarding = false;
  }

  /**
   * Counts the current line as failed without parsing it (e.g. it was too
   * long to read): inside a multi-line transaction, the whole transaction is
   * abandoned and its remaining lines up to `)` are skipped.
   */
  failLine(): void {
    if (this.#actions === undefined) return;
    this.#actions = undefined;
    this.#discarding = true;
  }

  /** Parses one line. Throws {@link UsageError} on a syntax error. */
  feed(line: string): ShellParse {
    if (this.#discarding) {
      // The rest of a transaction that already failed: none of it may run on its own.
      if (/\)\s*$/.test(line.trim())) this.#discarding = false;
      return this.#discarding ? { kind: "continue" } : { kind: "empty" };
    }
    const multiLine = this.#actions !== undefined;
    try {
      return this.#feed(line);
    } catch (e) {
      this.#actions = undefined;
      if (multiLine && !/\)\s*$/.test(line.trim())) this.#discarding = true;
      throw e;
    }
  }

  #feed(line: string): ShellParse {
    const trimmed = line.trim();
    if (!this.inTransaction) {
      if (trimmed === "" || trimmed.startsWith("#")) return { kind: "empty" };
      if (trimmed.startsWith("{")) return { kind: "command", command: parseJsonCommand(trimmed) };
    } else if (trimmed === "" || trimmed.startsWith("#")) {
      return { kind: "continue" };
    }
    let words = tokenize(trimmed).map((t) => t.text);
    if (!this.inTransaction) {
      const first = words[0];
      if (first === "transaction(" || first.startsWith("transaction(")) {
        const rest = first.slice("transaction(".length);
        words = rest ? [rest, ...words.slice(1)] : words.slice(1);
        this.#actions = [];
      } else {
        const [execute, ...kv] = words;
        const args = parseKeyValues(kv);
        return {
          kind: "command",
          command: Object.keys(args).length ? { execute, arguments: args } : { execute },
        };
      }
    }
    // Inside a transaction: actions separated by "," and ended by ")".
    const { groups, closed } = splitActions(words);
    for (const group of groups) {
      const [type, ...kv] = group;
      this.#actions!.push({ type, data: parseKeyValues(kv) });
    }
    if (!closed) return { kind: "continue" };
    const actions = this.#actions!;
    this.#actions = undefined;
    return { kind: "command", command: { execute: "transaction", arguments: { actions } } };
  }
}

/**
 * Splits the words of a transaction line into action groups at `,` (alone or
 * at the end of a word) and detects the closing `)` (alone or at the end of
 * the last word).
 */
function splitActions(words: string[]): { groups: string[][]; closed: boolean } {
  const groups: string[][] = [];
  let cur: string[] = [];
  let closed = false;
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    if (closed) throw new UsageError(`Unexpected input after the closing ")": ${w}`);
    const last = i === words.length - 1;
    if (w === ")") {
      closed = true;
      w = "";
    } else if (last && w.endsWith(")") && suffixIsSyntax(w)) {
      closed = true;
      w = w.slice(0, -1);
    }
    let comma = false;
    if (w.endsWith(",") && suffixIsSyntax(w)) {
      comma = true;
      w = w.slice(0, -1);
    }
    if (w !== "") cur.push(w);
    if (comma || closed) {
      if (cur.length) groups.push(cur);
      else if (comma) throw new UsageError(`Empty action before ","`);
      cur = [];
    }
  }
  if (cur.length) groups.push(cur);
  return { groups, closed };
}

/**
 * True when the last character of `word` (a `)` or `,`) is syntax rather than
 * part of the value: the value before it is complete (a closed quote, valid
 * JSON, or a plain word).
 */
function suffixIsSyntax(word: string): boolean {
  const body = word.slice(0, -1);
  const eq = body.indexOf("=");
  const value = eq < 0 ? body : body.slice(eq + 1);
  const first = value[0];
  if (first === '"' || first === "'") return value.length >= 2 && value.endsWith(first);
  if (first === "{" || first === "[") {
    try {
      JSON.parse(value);
      return true;
    } catch {
      return false;
    }
  }
  return true;
}

/** Copies plain objects and arrays; other values (bigints included) are kept as is. */
function copyJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(copyJson);
  if (isPlainObject(v)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, copyJson(x)]));
  }
  return v;
}
