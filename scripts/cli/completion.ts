/**
 * Tab completion for the shell, as a pure function of the line, the cursor
 * and the schema: command names, argument names (through dotted paths),
 * enum/boolean values, transaction actions, and HMP commands.
 *
 * @module
 */
import { parseKeyValues, tokenize } from "./args.ts";
import type { SchemaModel } from "./schema_help.ts";

/** Shell meta commands available in QMP mode (completed with command names). */
export const QMP_META_COMMANDS: readonly string[] = ["exit", "help", "hmp", "transaction("];

/** Shell meta commands available in HMP mode. */
export const HMP_META_COMMANDS: readonly string[] = ["exit", "qmp"];

/** What completion can draw from. Missing sources give no candidates. */
export interface CompletionSources {
  /** The QMP schema model. */
  schema?: SchemaModel;
  /** HMP command names (from HMP `help`). */
  hmpCommands?: readonly string[];
  /** HMP `info` subcommands (from HMP `info`). */
  hmpInfo?: readonly string[];
}

/** A completion request. */
export interface CompletionRequest {
  /** The whole line being edited. */
  line: string;
  /** Cursor offset in `line`. */
  cursor: number;
  /** The shell mode. */
  mode: "qmp" | "hmp";
  /** True inside a multi-line `transaction(` (each line is an action). */
  inTransaction?: boolean;
}

/**
 * Completion result: replace `line.slice(start, cursor)` with one of
 * `candidates` (all start with that text). A candidate ending in `=`, `.` or
 * `(` is a prefix of more input; others are whole words.
 */
export interface Completion {
  /** Offset where the replaced text starts. */
  start: number;
  /** Sorted, de-duplicated candidates. */
  candidates: string[];
}

/**
 * Computes completions for the word at the cursor.
 *
 * @example
 * ```ts ignore
 * complete({ line: "query-sta", cursor: 9, mode: "qmp" }, { schema });
 * // { start: 0, candidates: ["query-stats", "query-stats-schemas", "query-status"] }
 * ```
 */
export function complete(req: CompletionRequest, sources: CompletionSources): Completion {
  const before = req.line.slice(0, req.cursor);
  const tokens = tokenize(before, { partial: true });
  const atBoundary = before === "" || /\s$/.test(before);
  const current = atBoundary
    ? { text: "", start: req.cursor }
    : { text: tokens[tokens.length - 1].text, start: tokens[tokens.length - 1].start };
  const prev = (atBoundary ? tokens : tokens.slice(0, -1)).map((t) => t.text);
  const words = (list: readonly string[]) => result(current.start, current.text, list);

  if (req.mode === "hmp") return completeHmp(prev, current, sources, HMP_META_COMMANDS);
  const schema = sources.schema;
  if (req.inTransaction) return completeTransaction(prev, current, schema);
  if (prev.length === 0) {
    return words([...(schema?.commands() ?? []), ...QMP_META_COMMANDS]);
  }
  const first = prev[0];
  if (first === "help") {
    if (prev.length === 1) {
      return words([...(schema?.commands() ?? []), ...(schema?.events() ?? [])]);
    }
    return completeArgs(schema, schema?.argType(prev[1]), prev.slice(2), current);
  }
  if (first === "hmp") return completeHmp(prev.slice(1), current, sources, []);
  if (first.startsWith("transaction(")) {
    const rest = first.slice("transaction(".length);
    return completeTransaction([...(rest ? [rest] : []), ...prev.slice(1)], current, schema);
  }
  if (first.startsWith("{")) return { start: req.cursor, candidates: [] };
  return completeArgs(schema, schema?.argType(first), prev.slice(1), current);
}

interface Word {
  text: string;
  start: number;
}

function result(start: number, prefix: string, list: readonly string[]): Completion {
  const set = new Set(list.filter((c) => c.startsWith(prefix)));
  return { start, candidates: [...set].sort() };
}

function completeHmp(
  prev: string[],
  current: Word,
  sources: CompletionSources,
  meta: readonly string[],
): Completion {
  if (prev.length === 0) {
    return result(current.start, current.text, [...(sources.hmpCommands ?? []), ...meta]);
  }
  if (prev.length === 1 && prev[0] === "info") {
    return result(current.start, current.text, sources.hmpInfo ?? []);
  }
  if (prev.length === 1 && (prev[0] === "help" || prev[0] === "?")) {
    return result(current.start, current.text, sources.hmpCommands ?? []);
  }
  return { start: current.start, candidates: [] };
}

function completeTransaction(
  prev: string[],
  current: Word,
  schema: SchemaModel | undefined,
): Completion {
  // The current action: the words after the last "," (alone or ending a word).
  let from = 0;
  prev.forEach((w, i) => {
    if (w.endsWith(",")) from = i + 1;
  });
  const action = prev.slice(from);
  if (action.length === 0) {
    if (current.text.endsWith(",")) return { start: current.start, candidates: [] };
    return result(current.start, current.text, [...(schema?.transactionActions() ?? []), ")"]);
  }
  const dataType = schema?.transactionDataType(action[0]);
  return completeArgs(schema, dataType, action.slice(1), current);
}

/** Completes `key=value` words against the object type `rootType`. */
function completeArgs(
  schema: SchemaModel | undefined,
  rootType: string | undefined,
  given: string[],
  current: Word,
): Completion {
  const none = { start: current.start, candidates: [] };
  if (!schema || !rootType) return none;
  const args = lenientArgs(given);
  const text = current.text;
  const eq = text.indexOf("=");
  if (eq >= 0) {
    const path = text.slice(0, eq).split(".");
    const type = schema.memberTypeAt(rootType, path, args);
    if (!type) return none;
    return result(current.start + eq + 1, text.slice(eq + 1), schema.valueCandidates(type));
  }
  const segments = text.split(".");
  const prefix = segments.pop()!;
  const members = schema.membersAt(rootType, segments, args);
  if (!members) return none;
  const present = segments.reduce<unknown>(
    (v, k) => (isRecord(v) ? v[k] : undefined),
    args,
  );
  const candidates: string[] = [];
  for (const m of members) {
    const already = isRecord(present) ? present[m.name] : undefined;
    const entry = schema.entry(m.type);
    const meta = entry?.["meta-type"];
    const objectish = schema.objectBranch(m.type) !== undefined;
    if (meta === "object") {
      if (already === undefined || isRecord(already)) candidates.push(`${m.name}.`);
    } else if (already === undefined) {
      candidates.push(`${m.name}=`);
      if (objectish && meta === "alternate") candidates.push(`${m.name}.`);
    }
  }
  return result(current.start + text.length - prefix.length, prefix, candidates);
}

/** Parses the arguments typed so far, skipping words that do not parse. */
function lenientArgs(words: string[]): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  for (const w of words) {
    try {
      const one = parseKeyValues([w.replace(/[,)]$/, "")]);
      mergeInto(args, one);
    } catch { /* incomplete or invalid: ignore for completion */ }
  }
  return args;
}

function mergeInto(target: Record<string, unknown>, src: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(src)) {
    const t = target[k];
    if (isRecord(t) && isRecord(v)) mergeInto(t, v);
    else if (t === undefined) target[k] = v;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The longest common prefix of `words` (empty for an empty list). */
export function commonPrefix(words: readonly string[]): string {
  if (words.length === 0) return "";
  let p = words[0];
  for (const w of words) {
    let i = 0;
    while (i < p.length && i < w.length && p[i] === w[i]) i++;
    p = p.slice(0, i);
  }
  return p;
}

/**
 * Parses HMP `help` output into command names (aliases included:
 * `cont|c` gives `cont` and `c`). Continuation lines are skipped.
 */
export function parseHmpHelp(text: string): string[] {
  const names = new Set<string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Za-z][\w-]*(?:\|[^\s|]+)*)(?:\s|$)/.exec(line);
    if (!m || !line.includes(" -- ")) continue;
    for (const n of m[1].split("|")) names.add(n);
  }
  return [...names].sort();
}

/** Parses HMP `info` output (`info block [-n] ... -- ...`) into subcommand names. */
export function parseHmpInfo(text: string): string[] {
  const names = new Set<string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^info ([\w-]+)/.exec(line);
    if (m) names.add(m[1]);
  }
  return [...names].sort();
}
