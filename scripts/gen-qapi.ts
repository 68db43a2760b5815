/**
 * Generate TypeScript types for QEMU's whole QAPI (QMP) schema.
 *
 * The input is the result of `query-qmp-schema` (QMP introspection), which masks the names of
 * all non-builtin types as numbers ("263"). Real QAPI names are recovered from QEMU's reference
 * manual `qemu-qmp-ref(7)` by structural matching: commands and events keep their real names, so
 * their argument / return / data types are mapped to the names the manual documents, and names
 * are then propagated through members, arrays, union branches and alternate branches. Whatever is
 * left is matched by structure (member sets, enum value sets). Types with no QAPI name (implicit
 * argument / event-data types) or none recoverable get a synthesized, readable name.
 *
 * Usage:
 *   deno run -A scripts/gen-qapi.ts --schema tests/fixtures/qmp-schema-7.2.json
 *   deno run -A scripts/gen-qapi.ts --launch [qemu-system-x86_64]
 *   deno run -A scripts/gen-qapi.ts --qmp unix:/path/qmp.sock   (or tcp:host:port)
 *   deno run -A scripts/gen-qapi.ts --agent [--schema qapi-schema.json[.gz]]  (guest agent types;
 *                        see scripts/gen-qapi-agent.ts)
 *   deno run -A scripts/gen-qapi.ts --storage-daemon (--launch [BINARY] | --qmp ADDR | --schema F)
 *                        qemu-storage-daemon's types: StorageDaemonCommands in
 *                        lib/qapi/storage_daemon_types.ts, names from qemu-storage-daemon-qmp-ref(7)
 * Options:
 *   --man PATH           qemu-qmp-ref.7[.gz] (default: found under /usr/share/man)
 *   --out FILE           output (default lib/qapi/types.ts)
 *   --check              exit 1 if FILE would change (for CI)
 *   --qemu-version X.Y.Z version for the header and links (default: QEMU's, else the manual's)
 *   --doc-base URL       reference page for `@see` links (default: the Read the Docs build of that
 *                        release; anchors are the `qapidoc-N` ids of QEMU's Sphinx build)
 *   --save-schema FILE, --save-version FILE   with --qmp/--launch: save what was fetched
 *   --lenient            write even if name recovery reported inconsistencies
 *   --retry              with --qmp: keep retrying while the socket does not exist yet
 *   --quiet, -v/--verbose, -h/--help
 * Exit status: 0 done (or up to date), 1 failure (connection, launch, out of date with
 * --check, name recovery warnings), 2 usage error.
 *
 * The pure part (schema + manual text -> model -> TypeScript text) is exported and has no side
 * effects; the CLI only runs when this file is the main module.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connect, type QmpClient } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import { launchStorageDaemon } from "../lib/storage_daemon.ts";
import { formatError, UsageError } from "./cli/common.ts";
import { agentMain } from "./gen-qapi-agent.ts";

// ---------------------------------------------------------------------------------------------
// Introspection schema (the `query-qmp-schema` return value)
// ---------------------------------------------------------------------------------------------

/** A member of an introspected object type. */
export interface SchemaObjectMember {
  name: string;
  type: string;
  /** Present (always `null`) when the member is optional. */
  default?: null;
  features?: string[];
}

/** One `SchemaInfo` entry of `query-qmp-schema`. */
export type SchemaEntry =
  | { name: string; "meta-type": "builtin"; "json-type": string; features?: string[] }
  | {
    name: string;
    "meta-type": "enum";
    values: string[];
    members?: { name: string; features?: string[] }[];
    features?: string[];
  }
  | { name: string; "meta-type": "array"; "element-type": string; features?: string[] }
  | {
    name: string;
    "meta-type": "object";
    members: SchemaObjectMember[];
    tag?: string;
    variants?: { case: string; type: string }[];
    features?: string[];
  }
  | { name: string; "meta-type": "alternate"; members: { type: string }[]; features?: string[] }
  | {
    name: string;
    "meta-type": "command";
    "arg-type": string;
    "ret-type": string;
    "allow-oob"?: boolean;
    features?: string[];
  }
  | { name: string; "meta-type": "event"; "arg-type": string; features?: string[] };

type EntryOf<M extends SchemaEntry["meta-type"]> = Extract<SchemaEntry, { "meta-type": M }>;
type ObjectEntry = EntryOf<"object">;
type EnumEntry = EntryOf<"enum">;
type AlternateEntry = EntryOf<"alternate">;
type CommandEntry = EntryOf<"command">;
type EventEntry = EntryOf<"event">;

// ---------------------------------------------------------------------------------------------
// qemu-qmp-ref(7) parsing
// ---------------------------------------------------------------------------------------------

/** Kind of a documented QAPI definition, as the manual titles it. */
export type ManKind = "Enum" | "Object" | "Alternate" | "Command" | "Event";

/** A member (or argument) line of the manual: `name: type (optional) (If: ...)`. */
export interface ManMember {
  name: string;
  /** Documented type: `string`, `int`, `boolean`, `number`, `value`, `null`, `array of X`, `X`. */
  type: string | null;
  optional: boolean;
  ifcond: string[];
}

/** `The members of X when tag is "value"` (or an implicit branch's inline members). */
export interface ManVariant {
  tag: string;
  value: string;
  /** Named branch type; `null` for an implicit branch (then `members` lists its members). */
  type: string | null;
  members: ManMember[];
  ifcond: string[];
}

/** One definition documented in the manual. */
export interface ManDef {
  kind: ManKind;
  name: string;
  /** Own members / arguments / alternate branches. */
  members: ManMember[];
  /** `The members of X` without a `when` clause: base type, or boxed command/event argument. */
  base: string | null;
  variants: ManVariant[];
  /** Enum values. */
  values: { name: string; ifcond: string[] }[];
  features: string[];
  /** Text of the `Returns` section (commands). */
  returns: string;
  /** Plain text of the definition's description (before its subsections). */
  body: string;
  ifcond: string[];
  /** Serial number of the definition's section in QEMU's Sphinx build (`#qapidoc-N`). */
  anchor: number;
}

/** Result of {@linkcode parseManPage}. */
export interface ManPage {
  version: string | null;
  defs: Map<string, ManDef>;
}

const LIST_SECTIONS = new Set(["Members", "Arguments", "Values", "Features"]);
const DOC_SECTIONS = new Set([
  "Members",
  "Arguments",
  "Values",
  "Features",
  "Returns",
  "Since",
  "Note",
  "Notes",
  "Example",
  "Examples",
  "TODO",
  "If",
]);

/** Decode roff escapes used by Sphinx's man writer (keeps `\fB`/`\fP` font markers). */
function unroff(s: string): string {
  return s
    .replace(/\\\(aq/g, "'")
    .replace(/\\\(dq/g, '"')
    .replace(/\\\(bu/g, "*")
    .replace(/\\\(em/g, "--")
    .replace(/\\\(en/g, "-")
    .replace(/\\-/g, "-")
    .replace(/\\%/g, "")
    .replace(/\\&/g, "")
    .replace(/\\e/g, "\\");
}

/** Remove font markers. */
function plain(s: string): string {
  return s.replace(/\\f[BIPRC]/g, "");
}

function parseIfcond(s: string): string[] {
  const m = /\(\\fBIf: \\fP(.*)\)\s*$/.exec(s);
  if (!m) return [];
  return [...m[1].matchAll(/\\fB([^\\]*)\\fP/g)].map((x) => x[1]);
}

/** Parse one definition-list term of a Members/Arguments section. */
function parseTerm(
  raw: string,
): { member?: ManMember; base?: string; variant?: ManVariant } | null {
  let t = unroff(raw.replace(/^\.B\s+/, ""));
  const ifcond = parseIfcond(t);
  t = t.replace(/\s*\(\\fBIf: \\fP.*\)\s*$/, "");
  let when: { tag: string; value: string } | null = null;
  const w = / when \\fB([^\\]+)\\fP is \\fB"([^"]*)"\\fP\s*$/.exec(t);
  if (w) {
    when = { tag: w[1], value: w[2] };
    t = t.slice(0, w.index);
  }
  const mo = /^The members of \\fB([^\\]+)\\fP\s*$/.exec(t);
  if (mo) {
    if (when) return { variant: { ...when, type: mo[1], members: [], ifcond } };
    return { base: mo[1] };
  }
  const mm = /^\\fB([^\\]+)\\fP(?:: \\fB([^\\]+)\\fP)?( \(optional\))?\s*$/.exec(t);
  if (!mm) return null;
  const member: ManMember = { name: mm[1], type: mm[2] ?? null, optional: !!mm[3], ifcond };
  if (when) return { variant: { ...when, type: null, members: [member], ifcond: [] } };
  return { member };
}

interface RawSection {
  title: string;
  lines: string[];
}

/**
 * Parse the roff source of `qemu-qmp-ref(7)` into its documented definitions.
 *
 * Also reproduces the numbering of Sphinx section ids (`qapidoc-N`) that QEMU's `qapidoc`
 * extension assigns: headings and untitled free-form text take one number each in document
 * order; within a definition, its subsections are numbered first and the definition last.
 */
export function parseManPage(roff: string): ManPage {
  const lines = roff.split(/\r?\n/);
  const th = lines.find((l) => l.startsWith(".TH "));
  const version = th ? (/"(\d+\.\d+\.\d+)"/.exec(th)?.[1] ?? null) : null;

  // Level-2 headings are listed in the table of contents; definitions are "Name (Kind)".
  const bodyStart = lines.findIndex((l) => l.startsWith(".SH ") && !l.startsWith(".SH NAME"));
  const tocHeadings = new Set<string>();
  for (let i = 0; i < bodyStart; i++) {
    const m = /^\\fI\\%(.*)\\fP$/.exec(lines[i]);
    if (m && !/\((Enum|Object|Alternate|Command|Event)\)$/.test(m[1])) {
      tocHeadings.add(plain(unroff(m[1])));
    }
  }

  const defs = new Map<string, ManDef>();
  let serial = 0;
  type Block = { kind: "heading"; lines: string[] } | {
    kind: "def";
    defKind: ManKind;
    name: string;
    pre: string[];
    sections: RawSection[];
  };
  const blocks: Block[] = [];
  let cur: Block | null = null;
  for (let i = bodyStart; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith(".SH ")) {
      cur = { kind: "heading", lines: [] };
      blocks.push(cur);
      continue;
    }
    if (l.startsWith(".SS ")) {
      const title = l.slice(4);
      const d = /^\\fB(.*)\\fP \((Enum|Object|Alternate|Command|Event)\)$/.exec(title);
      if (d) {
        cur = { kind: "def", defKind: d[2] as ManKind, name: unroff(d[1]), pre: [], sections: [] };
        blocks.push(cur);
        continue;
      }
      const text = plain(unroff(title));
      if (tocHeadings.has(text)) {
        cur = { kind: "heading", lines: [] };
        blocks.push(cur);
        continue;
      }
      if (cur?.kind === "def") {
        cur.sections.push({ title: text, lines: [] });
        continue;
      }
    }
    if (!cur) continue;
    if (cur.kind === "heading") cur.lines.push(l);
    else if (cur.sections.length) cur.sections[cur.sections.length - 1].lines.push(l);
    else cur.pre.push(l);
  }

  const hasContent = (ls: string[]) => ls.some((l) => l.trim() !== "" && l !== ".sp");

  for (const b of blocks) {
    if (b.kind === "heading") {
      serial++; // the heading section
      if (hasContent(b.lines)) serial++; // untitled free-form text below it
      continue;
    }
    const def: ManDef = {
      kind: b.defKind,
      name: b.name,
      members: [],
      base: null,
      variants: [],
      values: [],
      features: [],
      returns: "",
      body: plain(unroff(b.pre.join("\n"))),
      ifcond: [],
      anchor: 0,
    };
    // Subsections that qapidoc creates (others come from rST titles inside doc text).
    const own = b.sections.filter((s) => DOC_SECTIONS.has(s.title));
    let untitled = false;
    for (const s of b.sections) {
      if (s.title === "Returns") def.returns += plain(unroff(s.lines.join("\n"))) + "\n";
      if (s.title === "If") {
        def.ifcond = [...unroff(s.lines.join(" ")).matchAll(/\\fB([^\\]*)\\fP/g)].map((x) => x[1]);
      }
      if (!LIST_SECTIONS.has(s.title)) continue;
      let depth = 0;
      let after: string[] | null = null;
      for (let k = 0; k < s.lines.length; k++) {
        const l = s.lines[k];
        if (after) {
          after.push(l);
          continue;
        }
        if (l.startsWith(".INDENT")) depth++;
        else if (l.startsWith(".UNINDENT")) {
          depth--;
          if (depth === 0) after = [];
        } else if (l === ".TP" && depth === 1) {
          const term = s.lines[++k];
          if (s.title === "Values") {
            const v = /^(?:\.B )?\\fB([^\\]+)\\fP/.exec(unroff(term));
            if (v) def.values.push({ name: v[1], ifcond: parseIfcond(unroff(term)) });
          } else if (s.title === "Features") {
            const f = /^(?:\.B )?\\fB([^\\]+)\\fP/.exec(unroff(term));
            if (f) def.features.push(f[1]);
          } else {
            const p = parseTerm(term);
            if (!p) throw new Error(`unparsed member term in ${b.name}: ${term}`);
            if (p.member) def.members.push(p.member);
            if (p.base) def.base = p.base;
            if (p.variant) {
              const prev = def.variants.find((v) =>
                v.type === null && p.variant!.type === null && v.value === p.variant!.value
              );
              if (prev) prev.members.push(...p.variant.members);
              else def.variants.push(p.variant);
            }
          }
        }
      }
      untitled = after !== null && hasContent(after); // the last list section decides
    }
    // A free-form paragraph after the last member/feature list is an untitled section of its
    // own: qapidoc numbers it after the titled subsections before it, and the definition last.
    serial += own.length + (untitled ? 1 : 0);
    def.anchor = serial++;
    if (defs.has(def.name)) throw new Error(`duplicate definition ${def.name} in manual`);
    defs.set(def.name, def);
  }
  return { version, defs };
}

// ---------------------------------------------------------------------------------------------
// Name recovery
// ---------------------------------------------------------------------------------------------

/** How a type's TypeScript name was obtained. */
export type NameSource =
  /** QEMU's QAPI name, recovered from the manual. */
  | "recovered"
  /** QAPI has no name for it (implicit command-argument / event-data / base type). */
  | "implicit"
  /** A named QAPI type whose name could not be recovered. */
  | "synthesized";

/** Name assigned to one introspected (numbered) type. */
export interface NamedType {
  /** The introspection name ("263"). */
  id: string;
  name: string;
  source: NameSource;
  /** Why: the evidence that produced the name. */
  via: string;
  /** The manual's definition, when recovered. */
  doc?: ManDef;
}

/** Result of {@linkcode recoverNames}. */
export interface NameMap {
  byId: Map<string, NamedType>;
  /** Documented members of implicit types (command arguments, event data). */
  memberDocs: Map<string, ManMember[]>;
  /** Problems found while verifying recovered names against the structure (should be empty). */
  warnings: string[];
}

const BUILTIN_DOC: Record<string, string> = {
  str: "string",
  int: "int",
  bool: "boolean",
  number: "number",
  null: "null",
  any: "value",
};

function pascal(s: string): string {
  return s.split(/[-_.]+/).filter(Boolean).map((p) =>
    p === p.toUpperCase() && p.length > 1
      ? p[0] + p.slice(1).toLowerCase()
      : p[0].toUpperCase() + p.slice(1)
  ).join("");
}

/** A readable name for a type nothing refers to, made from its member names or values. */
function structuralName(e: SchemaEntry): string {
  const words = e["meta-type"] === "enum"
    ? e.values
    : e["meta-type"] === "object"
    ? e.members.map((m) => m.name)
    : [];
  const kind = e["meta-type"] === "enum" ? "Enum" : e["meta-type"] === "object" ? "Object" : "Alt";
  return `${words.slice(0, 3).map(pascal).join("")}${kind}`;
}

/** Index of an introspection schema by name. */
export class Schema {
  readonly entries: SchemaEntry[];
  readonly byName: Map<string, SchemaEntry>;
  constructor(entries: SchemaEntry[]) {
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }
  get(name: string): SchemaEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`schema has no type ${JSON.stringify(name)}`);
    return e;
  }
  commands(): CommandEntry[] {
    return this.entries.filter((e): e is CommandEntry => e["meta-type"] === "command");
  }
  events(): EventEntry[] {
    return this.entries.filter((e): e is EventEntry => e["meta-type"] === "event");
  }
  /** Numbered (name-masked) types: objects, enums, alternates. Arrays are derived. */
  namedTypes(): SchemaEntry[] {
    return this.entries.filter((e) =>
      e["meta-type"] === "object" || e["meta-type"] === "enum" || e["meta-type"] === "alternate"
    );
  }
}

/** All members of a documented object: its base's (recursively) first, then its own. */
function manFlatMembers(man: ManPage, def: ManDef, seen = new Set<string>()): ManMember[] {
  if (seen.has(def.name)) return [];
  seen.add(def.name);
  const base = def.base ? man.defs.get(def.base) : undefined;
  return [...(base ? manFlatMembers(man, base, seen) : []), ...def.members];
}

/**
 * Recover QEMU's real type names for the numbered types of an introspection schema, using the
 * reference manual, and synthesize names for the rest.
 */
export function recoverNames(
  schema: Schema,
  man: ManPage,
  reserved: Iterable<string> = [],
): NameMap {
  const byId = new Map<string, NamedType>();
  const taken = new Map<string, string>(); // TS name -> id
  // Names a made-up name must not take: every documented type and the caller's own names.
  const avoid = new Set<string>(reserved);
  for (const d of man.defs.values()) {
    if (d.kind !== "Command" && d.kind !== "Event") avoid.add(d.name);
  }
  const warnings: string[] = [];
  const queue: string[] = [];

  const isNumbered = (id: string) => /^\d+$/.test(id);

  function assign(id: string, name: string, source: NameSource, via: string): void {
    if (!isNumbered(id)) return;
    const prev = byId.get(id);
    if (prev) {
      if (prev.name !== name && source === "recovered" && prev.source === "recovered") {
        warnings.push(`type ${id}: ${prev.name} (${prev.via}) vs ${name} (${via})`);
      }
      return;
    }
    const doc = source === "recovered" ? man.defs.get(name) : undefined;
    if (source === "recovered") {
      if (!doc) {
        warnings.push(`type ${id}: manual has no ${name} (${via})`);
        return;
      }
      const e = schema.get(id);
      const want = e["meta-type"] === "object"
        ? "Object"
        : e["meta-type"] === "enum"
        ? "Enum"
        : "Alternate";
      if (doc.kind !== want) {
        warnings.push(`type ${id} is ${e["meta-type"]} but ${name} is ${doc.kind} (${via})`);
        return;
      }
    }
    if (taken.has(name) && source === "recovered") {
      warnings.push(`${name} matched both ${taken.get(name)} and ${id} (${via})`);
      return;
    }
    if (source !== "recovered") name = freeName(name);
    taken.set(name, id);
    byId.set(id, { id, name, source, via, doc });
    queue.push(id);
  }

  function freeName(name: string): string {
    if (!/^[A-Za-z_]/.test(name)) name = `Qapi${name}`;
    let n = name;
    for (let i = 2; taken.has(n) || avoid.has(n); i++) n = `${name}${i}`;
    return n;
  }

  /** Map an introspected member type to a documented type string. */
  function link(typeId: string, docType: string | null, via: string): void {
    if (docType === null) return;
    const arr = /^\[(.*)\]$/.exec(typeId);
    const docArr = /^array of (.*)$/.exec(docType);
    if (arr) {
      if (docArr) link(arr[1], docArr[1], via);
      else warnings.push(`${via}: ${typeId} is an array but documented as ${docType}`);
      return;
    }
    if (docArr) {
      warnings.push(`${via}: ${typeId} documented as array ${docType}`);
      return;
    }
    const e = schema.get(typeId);
    if (e["meta-type"] === "builtin") {
      if (BUILTIN_DOC[e.name] !== docType) {
        warnings.push(`${via}: builtin ${e.name} documented as ${docType}`);
      }
      return;
    }
    assign(typeId, docType, "recovered", via);
  }

  /** Propagate documented member types of `def` onto the members of object `e`. */
  function linkMembers(e: ObjectEntry, members: ManMember[], via: string): void {
    const byName = new Map(members.map((m) => [m.name, m]));
    for (const m of e.members) {
      const dm = byName.get(m.name);
      if (!dm) {
        warnings.push(`${via}: member ${m.name} not documented`);
        continue;
      }
      link(m.type, dm.type, `${via}.${m.name}`);
    }
  }

  function propagate(id: string): void {
    const t = byId.get(id)!;
    const e = schema.get(id);
    if (e["meta-type"] === "object") {
      const members = t.doc ? manFlatMembers(man, t.doc) : (implicitDocs.get(id) ?? null);
      if (members) linkMembers(e, members, t.name);
      if (e.variants) {
        for (const v of e.variants) {
          const dv = t.doc?.variants.find((x) => x.value === v.case);
          if (dv?.type) link(v.type, dv.type, `${t.name}(${v.case})`);
          else if (dv) {
            implicitDocs.set(v.type, dv.members);
            assign(v.type, `${t.name}${pascal(v.case)}`, "implicit", `branch ${v.case}`);
          }
        }
      }
    } else if (e["meta-type"] === "alternate" && t.doc) {
      // Pair branches by JSON kind: builtins by their doc names, named types by meta-type.
      const docs = t.doc.members.map((m) => m.type ?? "");
      const used = new Set<number>();
      for (const b of e.members) {
        const be = b.type.startsWith("[") ? null : schema.get(b.type);
        let idx = -1;
        if (be?.["meta-type"] === "builtin") idx = docs.indexOf(BUILTIN_DOC[be.name]);
        else {
          const cands = docs.map((d, i) => ({ d, i })).filter(({ d, i }) => {
            if (used.has(i)) return false;
            if (b.type.startsWith("[")) return d.startsWith("array of ");
            const dd = man.defs.get(d);
            const kind = be!["meta-type"] === "object"
              ? "Object"
              : be!["meta-type"] === "enum"
              ? "Enum"
              : "Alternate";
            return dd?.kind === kind;
          });
          if (cands.length === 1) idx = cands[0].i;
          else warnings.push(`${t.name}: cannot pair alternate branch ${b.type}`);
        }
        if (idx >= 0) {
          used.add(idx);
          link(b.type, docs[idx], `${t.name}|${b.type}`);
        }
      }
    }
  }

  // Inline member docs for implicit types (command arguments, event data, implicit branches).
  const implicitDocs = new Map<string, ManMember[]>();

  const drain = () => {
    while (queue.length) propagate(queue.shift()!);
  };

  // 1. Seeds: commands and events keep their names.
  const pendingArgs: (CommandEntry | EventEntry)[] = [];
  for (const c of [...schema.commands(), ...schema.events()]) {
    const d = man.defs.get(c.name);
    const argId = c["arg-type"];
    const isCmd = c["meta-type"] === "command";
    if (!d) {
      warnings.push(`${c.name}: not documented in the manual`);
      continue;
    }
    if (argId !== "0" && isNumbered(argId)) {
      if (d.base) assign(argId, d.base, "recovered", `${c.name} (boxed)`);
      else if (d.members.length) {
        implicitDocs.set(argId, d.members);
        const what = isCmd ? "Arguments" : "Data";
        assign(argId, `${pascal(c.name)}${what}`, "implicit", `${c.name} ${what.toLowerCase()}`);
      } else pendingArgs.push(c); // a named type ('data': 'Type'); see below
    }
    drain();
  }
  // 2. Return types: candidates are the type names the Returns section mentions.
  /** Documented object / enum / alternate names mentioned in `text`. */
  const mentioned = (text: string): string[] =>
    [...new Set(text.match(/[A-Za-z][A-Za-z0-9]*/g) ?? [])].filter((w) => {
      const d = man.defs.get(w);
      return d && d.kind !== "Command" && d.kind !== "Event";
    });
  let progress = true;
  while (progress) {
    progress = false;
    // Commands whose arguments are a named type: the manual refers to it in the description.
    for (const c of pendingArgs) {
      const id = c["arg-type"];
      if (byId.has(id)) continue;
      const fits = mentioned(man.defs.get(c.name)!.body).filter((n) =>
        !taken.has(n) && matches(id, n)
      );
      if (fits.length === 1) {
        assign(id, fits[0], "recovered", `${c.name} arguments`);
        drain();
        progress = true;
      }
    }
    for (const c of schema.commands()) {
      let ret = c["ret-type"];
      while (ret.startsWith("[")) ret = ret.slice(1, -1);
      if (!isNumbered(ret) || ret === "0" || byId.has(ret)) continue;
      const fits = mentioned(man.defs.get(c.name)?.returns ?? "").filter((n) =>
        !taken.has(n) && matches(ret, n)
      );
      if (fits.length === 1) {
        assign(ret, fits[0], "recovered", `${c.name} returns`);
        drain();
        progress = true;
      }
    }
    // 3. Structural matching of whatever is still anonymous.
    if (!progress) {
      for (const e of schema.namedTypes()) {
        if (byId.has(e.name) || e.name === "0") continue;
        const fits = [...man.defs.values()].filter((d) =>
          !taken.has(d.name) && d.kind !== "Command" && d.kind !== "Event" &&
          matches(e.name, d.name)
        );
        if (fits.length === 1) {
          assign(e.name, fits[0].name, "recovered", "structure");
          drain();
          progress = true;
        }
      }
    }
  }

  /** Does introspected type `id` fit documented type `name` (member names, optionality, enum values)? */
  function matches(id: string, name: string): boolean {
    const e = schema.get(id);
    const d = man.defs.get(name);
    if (!d) return false;
    if (e["meta-type"] === "enum") {
      if (d.kind !== "Enum") return false;
      const docVals = new Set(d.values.map((v) => v.name));
      const uncond = d.values.filter((v) => !v.ifcond.length).map((v) => v.name);
      return e.values.every((v) => docVals.has(v)) && uncond.every((v) => e.values.includes(v));
    }
    if (e["meta-type"] === "object") {
      if (d.kind !== "Object") return false;
      const dm = manFlatMembers(man, d);
      const byName = new Map(dm.map((m) => [m.name, m]));
      for (const m of e.members) {
        const x = byName.get(m.name);
        if (!x || x.optional !== ("default" in m)) return false;
        if (!typeFits(m.type, x.type)) return false;
      }
      const names = new Set(e.members.map((m) => m.name));
      if (dm.some((m) => !m.ifcond.length && !names.has(m.name))) return false;
      // Introspection also lists branches without members (type "0"); the manual does not.
      const cases = new Set((e.variants ?? []).filter((v) => v.type !== "0").map((v) => v.case));
      const dcases = new Set(d.variants.map((v) => v.value));
      if (cases.size !== [...cases].filter((c) => dcases.has(c)).length) return false;
      if (d.variants.some((v) => !v.ifcond.length && !cases.has(v.value))) return false;
      return d.variants.every((v) => v.tag === e.tag);
    }
    if (e["meta-type"] === "alternate") {
      if (d.kind !== "Alternate" || d.members.length !== e.members.length) return false;
      return e.members.every((b) => d.members.some((m) => typeFits(b.type, m.type)));
    }
    return false;
  }

  function typeFits(id: string, doc: string | null): boolean {
    if (doc === null) return true;
    const arr = /^\[(.*)\]$/.exec(id);
    const docArr = /^array of (.*)$/.exec(doc);
    if (arr || docArr) return !!arr && !!docArr && typeFits(arr[1], docArr[1]);
    const e = schema.get(id);
    if (e["meta-type"] === "builtin") return BUILTIN_DOC[e.name] === doc;
    const known = byId.get(id);
    if (known) return known.name === doc || known.source !== "recovered";
    const dd = man.defs.get(doc);
    return !!dd &&
      dd.kind ===
        (e["meta-type"] === "object" ? "Object" : e["meta-type"] === "enum" ? "Enum" : "Alternate");
  }

  // 4. Verify every recovered name against the structure.
  for (const t of byId.values()) {
    if (t.source === "recovered" && !matches(t.id, t.name)) {
      warnings.push(`verification: ${t.id} does not fit ${t.name} (${t.via})`);
    }
  }

  // 5. Synthesize names for what is left, after the first referrer (stable: schema order).
  let left = schema.namedTypes().filter((e) => e.name !== "0" && !byId.has(e.name));
  while (left.length) {
    for (const e of schema.entries) {
      const owner = byId.get(e.name);
      if (!owner || e["meta-type"] !== "object") continue;
      for (const m of e.members) {
        let t = m.type;
        while (t.startsWith("[")) t = t.slice(1, -1);
        if (isNumbered(t) && !byId.has(t) && t !== "0") {
          assign(t, `${owner.name}${pascal(m.name)}`, "synthesized", `${owner.name}.${m.name}`);
        }
      }
      for (const v of e.variants ?? []) {
        if (!byId.has(v.type) && v.type !== "0") {
          assign(
            v.type,
            `${owner.name}${pascal(v.case)}`,
            "synthesized",
            `${owner.name}(${v.case})`,
          );
        }
      }
    }
    for (const c of schema.commands()) {
      let t = c["ret-type"];
      while (t.startsWith("[")) t = t.slice(1, -1);
      if (isNumbered(t) && t !== "0" && !byId.has(t)) {
        assign(t, `${pascal(c.name)}Return`, "synthesized", `${c.name} returns`);
      }
    }
    const still = schema.namedTypes().filter((e) => e.name !== "0" && !byId.has(e.name));
    if (still.length === left.length) {
      for (const e of still) assign(e.name, structuralName(e), "synthesized", "nothing (unused)");
    }
    left = still.filter((e) => !byId.has(e.name));
    drain();
  }
  return { byId, memberDocs: implicitDocs, warnings };
}

// ---------------------------------------------------------------------------------------------
// TypeScript rendering
// ---------------------------------------------------------------------------------------------

/** Options of {@linkcode renderTypes}. */
export interface RenderOptions {
  /** QEMU version the schema comes from, e.g. "7.2.22". */
  qemuVersion: string;
  /** Base URL of the QMP reference page; `#qapidoc-N` is appended. */
  docBase: string;
  /**
   * `"qmp"` (default): QEMU's system emulator, `QmpCommands`/`QmpEvents` and helper types.
   * `"storage-daemon"`: `qemu-storage-daemon`'s block-only schema, as
   * `StorageDaemonCommands`/`StorageDaemonEvents` with `StorageDaemon`-prefixed helpers.
   */
  flavor?: "qmp" | "storage-daemon";
}

/** Names of the hand-written helper types of the preamble (never used for QAPI types). */
export const PREAMBLE_NAMES = [
  "QmpCommands",
  "QmpEvents",
  "CommandName",
  "CommandArgs",
  "CommandArgsParam",
  "CommandReturn",
  "EventName",
  "EventData",
  "EventMessage",
  "QmpTimestamp",
  "StorageDaemonCommands",
  "StorageDaemonEvents",
  "StorageDaemonCommandName",
  "StorageDaemonEventName",
];

/**
 * Commands that accept more arguments than introspection shows (QAPI `'gen': false` commands
 * whose handler reads extra members itself): their arguments type gets an index signature.
 */
const OPEN_ARGUMENTS: Record<string, string> = {
  device_add: "Further properties of the device (they depend on `driver`).",
};

const LINE_WIDTH = 100;
const EMPTY = "Record<string, never>";

/** Default documentation base for a QEMU version (Read the Docs keeps one build per release). */
export function defaultDocBase(version: string, flavor: RenderOptions["flavor"] = "qmp"): string {
  const page = flavor === "storage-daemon" ? "qemu-storage-daemon-qmp-ref" : "qemu-qmp-ref";
  return `https://qemu.readthedocs.io/en/v${version}/interop/${page}.html`;
}

function key(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

function code(s: string): string {
  return "`" + s + "`";
}

function featureTags(features: string[] | undefined): string[] {
  const tags: string[] = [];
  if (features?.includes("deprecated")) tags.push("@deprecated");
  if (features?.includes("unstable")) tags.push("@experimental");
  return tags;
}

/** A one-line JSDoc, or a block when there are tags. */
function jsdoc(indent: string, text: string, tags: string[] = []): string[] {
  if (tags.length === 0) return [`${indent}/** ${text} */`];
  return [
    `${indent}/**`,
    `${indent} * ${text}`,
    ...tags.map((t) => `${indent} * ${t}`),
    `${indent} */`,
  ];
}

/** `export type X = A | B;` on one line, or one member per line when too long. */
function unionAlias(name: string, members: string[]): string[] {
  const one = `export type ${name} = ${members.join(" | ")};`;
  if (one.length <= LINE_WIDTH && !members.some((m) => m.includes("\n"))) return [one];
  return [
    `export type ${name} =`,
    ...members.map((m, i) => `  | ${m}${i === members.length - 1 ? ";" : ""}`),
  ];
}

/** Render the generated module. */
export function renderTypes(
  schema: Schema,
  man: ManPage,
  names: NameMap,
  opts: RenderOptions,
): string {
  const nameOf = (id: string): string => {
    const t = names.byId.get(id);
    if (!t) throw new Error(`no name for type ${id}`);
    return t.name;
  };
  const qapiName = (id: string): string => {
    const arr = /^\[(.*)\]$/.exec(id);
    if (arr) return `[${qapiName(arr[1])}]`;
    return schema.get(id)["meta-type"] === "builtin" ? id : nameOf(id);
  };
  const tsType = (id: string): string => {
    const arr = /^\[(.*)\]$/.exec(id);
    if (arr) {
      const element = tsType(arr[1]);
      return element.includes(" | ") ? `(${element})[]` : `${element}[]`;
    }
    if (id === "0") return EMPTY;
    const e = schema.get(id);
    if (e["meta-type"] === "builtin") {
      return ({
        str: "string",
        int: "number | bigint",
        number: "number",
        bool: "boolean",
        null: "null",
      } as Record<string, string>)[e.name] ?? "unknown";
    }
    return nameOf(id);
  };
  const anchor = (d: ManDef | undefined) => d ? `${opts.docBase}#qapidoc-${d.anchor}` : null;
  const ifText = (conds: string[]) =>
    conds.length ? ` Build-dependent (${conds.map(code).join(", ")}).` : "";

  const out: string[] = [];
  const commands = [...schema.commands()].sort((a, b) => cmp(a.name, b.name));
  const events = [...schema.events()].sort((a, b) => cmp(a.name, b.name));
  const types = schema.namedTypes().filter((e) => e.name !== "0");

  const sd = opts.flavor === "storage-daemon";
  const C = sd ? "StorageDaemonCommands" : "QmpCommands";
  const E = sd ? "StorageDaemonEvents" : "QmpEvents";
  if (sd) {
    out.push(
      `// Generated by scripts/gen-qapi.ts from the QAPI schema of qemu-storage-daemon ${opts.qemuVersion}. DO NOT EDIT.`,
      "// Regenerate with: deno task gen-qapi --storage-daemon",
      "",
      "/**",
      ` * Types for the QMP interface of \`qemu-storage-daemon\` ${opts.qemuVersion}, generated from`,
      ` * its QAPI schema (\`query-qmp-schema\`): ${commands.length} commands ({@linkcode ${C}}),`,
      ` * ${events.length} events ({@linkcode ${E}}) and ${types.length} named types. The daemon has no`,
      " * VM: only block, job, export, chardev and QOM commands. Use them as",
      " * `QmpClient<StorageDaemonCommands>` (what `launchStorageDaemon()` returns): a command only",
      " * the system emulator has then fails `deno check`.",
      " *",
      " * Type names are QEMU's own QAPI names, recovered from `qemu-storage-daemon-qmp-ref(7)`.",
      " * Types QAPI leaves unnamed are called `<Command>Arguments`, `<Event>Data` and `<Union>Base`.",
      " * QAPI integers are `number | bigint` (see `lib/qapi/types.ts`).",
      " *",
      " * @module",
      " */",
      "",
      "/** Name of a command of the storage daemon. */",
      `export type StorageDaemonCommandName = keyof ${C};`,
      "",
      "/** Name of an event of the storage daemon. */",
      `export type StorageDaemonEventName = keyof ${E};`,
      "",
    );
  } else {
    out.push(
      `// Generated by scripts/gen-qapi.ts from the QAPI schema of QEMU ${opts.qemuVersion}. DO NOT EDIT.`,
      "// Regenerate with: deno task gen-qapi",
      "",
      "/**",
      ` * Types for the QMP interface of QEMU ${opts.qemuVersion}, generated from its QAPI schema`,
      ` * (\`query-qmp-schema\`): ${commands.length} commands ({@linkcode QmpCommands}), ` +
        `${events.length} events ({@linkcode QmpEvents})`,
      ` * and ${types.length} named types.`,
      " *",
      " * Type names are QEMU's own QAPI names, recovered from the reference manual `qemu-qmp-ref(7)`.",
      " * Types QAPI leaves unnamed are called `<Command>Arguments`, `<Event>Data` and `<Union>Base`.",
      " *",
      " * QAPI integers (`int`, `int64`, `uint64`, `size`, ...; introspection calls them all `int`) are",
      " * `number | bigint`: qmpkit parses an integer beyond ±(2^53-1) as an exact `bigint`, and",
      " * arguments accept either.",
      " *",
      " * @module",
      " */",
      "",
    );

    // -- preamble ---------------------------------------------------------------------------------
    out.push(
      "/** Name of a QMP command. */",
      "export type CommandName = keyof QmpCommands;",
      "",
      "/** Arguments of QMP command `K` (`Record<string, never>` when it takes none). */",
      'export type CommandArgs<K extends CommandName> = QmpCommands[K]["args"];',
      "",
      "/** Return value of QMP command `K` (`Record<string, never>` when it returns nothing). */",
      'export type CommandReturn<K extends CommandName> = QmpCommands[K]["return"];',
      "",
      "/** Rest parameters for the arguments of command `K`: optional when none is required. */",
      "export type CommandArgsParam<K extends CommandName> = Record<string, never> extends CommandArgs<K>",
      "  ? [args?: CommandArgs<K>]",
      "  : [args: CommandArgs<K>];",
      "",
      "/** Name of a QMP event. */",
      "export type EventName = keyof QmpEvents;",
      "",
      "/** Data of QMP event `E` (`undefined` when the event carries none). */",
      "export type EventData<E extends EventName> = QmpEvents[E];",
      "",
      "/** Time stamp of a QMP event (both fields are -1 when QEMU cannot read the host clock). */",
      "export interface QmpTimestamp {",
      "  /** Seconds since the Unix epoch. */",
      "  seconds: number;",
      "  /** Microseconds within the second. */",
      "  microseconds: number;",
      "}",
      "",
      "/** An event message as QEMU sends it (`data` is left out when the event has none). */",
      "export type EventMessage<E extends EventName = EventName> = {",
      "  [K in E]: QmpEvents[K] extends undefined ? { event: K; timestamp: QmpTimestamp }",
      "    : { event: K; data: QmpEvents[K]; timestamp: QmpTimestamp };",
      "}[E];",
      "",
    );
  }

  // -- commands -------------------------------------------------------------------------------
  out.push(
    sd
      ? `/** Every command of qemu-storage-daemon ${opts.qemuVersion}: its arguments and return type. */`
      : `/** Every QMP command of QEMU ${opts.qemuVersion}: its arguments and return type. */`,
    `export interface ${C} {`,
  );
  for (const c of commands) {
    const d = man.defs.get(c.name);
    const notes: string[] = [];
    if (c["allow-oob"]) notes.push("Supports out-of-band execution (`exec-oob`).");
    const experimental = c.name.startsWith("x-") || !!c.features?.includes("unstable");
    const other = (c.features ?? []).filter((f) => f !== "deprecated" && f !== "unstable");
    if (other.length) notes.push(`Features: ${other.map(code).join(", ")}.`);
    const tags: string[] = [];
    if (c.features?.includes("deprecated")) tags.push("@deprecated");
    if (experimental) tags.push("@experimental");
    const url = anchor(d);
    if (url) tags.push(`@see ${url}`);
    const text = `Command ${code(c.name)}.${notes.length ? " " + notes.join(" ") : ""}` +
      ifText(d?.ifcond ?? []);
    out.push("  /**", `   * ${text}`, ...tags.map((t) => `   * ${t}`), "   */");
    const args = tsType(c["arg-type"]);
    const ret = tsType(c["ret-type"]);
    const one = `  ${key(c.name)}: { args: ${args}; return: ${ret} };`;
    if (one.length <= LINE_WIDTH) out.push(one);
    else out.push(`  ${key(c.name)}: {`, `    args: ${args};`, `    return: ${ret};`, "  };");
  }
  out.push("}", "");

  // -- events ---------------------------------------------------------------------------------
  out.push(
    sd
      ? `/** Every event of qemu-storage-daemon ${opts.qemuVersion}: its data (\`undefined\` when it has none). */`
      : `/** Every QMP event of QEMU ${opts.qemuVersion}: its data (\`undefined\` when it has none). */`,
    `export interface ${E} {`,
  );
  for (const ev of events) {
    const d = man.defs.get(ev.name);
    const tags = featureTags(ev.features);
    const url = anchor(d);
    if (url) tags.push(`@see ${url}`);
    out.push("  /**", `   * Event ${code(ev.name)}.${ifText(d?.ifcond ?? [])}`);
    out.push(...tags.map((t) => `   * ${t}`), "   */");
    out.push(
      `  ${key(ev.name)}: ${ev["arg-type"] === "0" ? "undefined" : tsType(ev["arg-type"])};`,
    );
  }
  out.push("}", "");

  // -- named types ----------------------------------------------------------------------------
  const blocks: { name: string; lines: string[] }[] = [];
  const usedNames = new Set([...names.byId.values()].map((t) => t.name));
  for (const n of PREAMBLE_NAMES) usedNames.add(n);
  for (const d of man.defs.values()) usedNames.add(d.name);
  const emittedBases = new Set<string>();
  for (const e of types) {
    const t = names.byId.get(e.name)!;
    const lines: string[] = [];
    const docName = t.source === "recovered" ? code(t.name) : "";
    const typeTags = featureTags(e.features);
    const typeIf = ifText(t.doc?.ifcond ?? []);
    const extraFeatures = (e.features ?? []).filter((f) => f !== "deprecated" && f !== "unstable");
    const featText = extraFeatures.length
      ? ` Features: ${extraFeatures.map(code).join(", ")}.`
      : "";
    const describe = (kind: string): string => {
      if (t.source === "recovered") return `QAPI ${kind} ${docName}.${featText}${typeIf}`;
      if (t.source === "implicit") {
        const m = /^(\S+) (arguments|data)$/.exec(t.via);
        if (m) {
          return `${m[2] === "data" ? "Data of event" : "Arguments of command"} ${
            code(m[1])
          } (unnamed in QAPI).${featText}`;
        }
        return `QAPI ${kind} (unnamed in QAPI; ${t.via}).${featText}`;
      }
      return `QAPI ${kind} whose name was not recovered (used by ${t.via}).${featText}`;
    };
    if (e["meta-type"] === "enum") {
      const dep = (e.members ?? []).filter((m) => m.features?.includes("deprecated"));
      const uns = (e.members ?? []).filter((m) => m.features?.includes("unstable"));
      let text = describe("enum");
      if (dep.length) text += ` Deprecated values: ${dep.map((m) => code(m.name)).join(", ")}.`;
      if (uns.length) text += ` Unstable values: ${uns.map((m) => code(m.name)).join(", ")}.`;
      lines.push(...jsdoc("", text, typeTags));
      lines.push(...unionAlias(t.name, e.values.map((v) => JSON.stringify(v))));
    } else if (e["meta-type"] === "alternate") {
      lines.push(...jsdoc("", describe("alternate"), typeTags));
      lines.push(...unionAlias(t.name, e.members.map((m) => tsType(m.type))));
    } else if (e["meta-type"] === "object") {
      const docMembers = t.doc ? manFlatMembers(man, t.doc) : (names.memberDocs.get(e.name) ?? []);
      const memberLines = (members: SchemaObjectMember[]): string[] => {
        const ls: string[] = [];
        for (const m of members) {
          const dm = docMembers.find((x) => x.name === m.name);
          const text = `QAPI type ${code(qapiName(m.type))}.${ifText(dm?.ifcond ?? [])}`;
          ls.push(...jsdoc("  ", text, featureTags(m.features)));
          ls.push(`  ${key(m.name)}${"default" in m ? "?" : ""}: ${tsType(m.type)};`);
        }
        return ls;
      };
      if (!e.variants) {
        lines.push(...jsdoc("", describe("object"), typeTags));
        if (e.members.length === 0) lines.push(`export type ${t.name} = ${EMPTY};`);
        else {
          lines.push(`export interface ${t.name} {`, ...memberLines(e.members));
          const open = OPEN_ARGUMENTS[/^(\S+) arguments$/.exec(t.via)?.[1] ?? ""];
          if (t.source === "implicit" && open) {
            lines.push(`  /** ${open} */`, "  [property: string]: unknown;");
          }
          lines.push("}");
        }
      } else {
        // Flat union: base members (tag included) & tag literal & branch members.
        const tag = e.tag!;
        const tagMember = e.members.find((m) => m.name === tag)!;
        let baseName: string | null = null;
        if (e.members.length > 1) {
          const real = t.doc?.base;
          const isReal = !!real && ![...names.byId.values()].some((x) => x.name === real);
          if (isReal) baseName = real;
          else {
            baseName = `${t.name}Base`;
            for (let i = 2; usedNames.has(baseName); i++) baseName = `${t.name}Base${i}`;
            usedNames.add(baseName);
          }
          if (!emittedBases.has(baseName)) {
            emittedBases.add(baseName);
            const baseLines: string[] = [];
            baseLines.push(
              ...jsdoc(
                "",
                isReal
                  ? `QAPI object ${code(baseName)}, the base of union ${code(t.name)}.`
                  : `Members common to all branches of union ${code(t.name)} (unnamed in QAPI).`,
              ),
              `export interface ${baseName} {`,
              ...memberLines(e.members),
              "}",
            );
            blocks.push({ name: baseName, lines: baseLines });
          }
        }
        lines.push(
          ...jsdoc("", `${describe("union")} Discriminated by ${code(tag)}.`, typeTags),
        );
        const tagEnum = schema.get(tagMember.type) as EnumEntry;
        const branches = tagEnum.values.map((value) => {
          const v = e.variants!.find((x) => x.case === value);
          const parts = [
            ...(baseName ? [baseName] : []),
            `{ ${key(tag)}: ${JSON.stringify(value)} }`,
            ...(v && v.type !== "0" ? [tsType(v.type)] : []),
          ];
          return parts.join(" & ");
        });
        lines.push(...unionAlias(t.name, branches));
      }
    }
    blocks.push({ name: t.name, lines });
  }
  blocks.sort((a, b) => cmp(a.name, b.name));
  for (const b of blocks) out.push(...b.lines, "");
  return out.join("\n").replace(/\n+$/, "\n");
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Inputs: saved schema, live QEMU, manual
// ---------------------------------------------------------------------------------------------

/** What {@linkcode fetchSchemaLive} returns. */
export interface LiveSchema {
  /** The `query-qmp-schema` return. */
  schema: SchemaEntry[];
  /** `query-version` return. */
  version: {
    qemu: { major: number | bigint; minor: number | bigint; micro: number | bigint };
    package: string;
  };
}

async function fetchWith(qmp: QmpClient): Promise<LiveSchema> {
  const version = await qmp.execute("query-version");
  const schema = await qmp.execute("query-qmp-schema") as unknown as SchemaEntry[];
  return { schema, version };
}

/**
 * Fetch `query-version` and `query-qmp-schema` from a running QEMU's QMP monitor;
 * with `retry`, wait (within `timeout`) for a socket that does not exist yet.
 */
export async function fetchSchemaLive(
  address: string,
  timeout = "10s",
  retry = false,
): Promise<LiveSchema> {
  await using qmp = await connect(address, { timeout, commandTimeout: timeout, retry });
  return await fetchWith(qmp);
}

/** Start `binary -machine none`, fetch its schema, and stop it. */
export async function launchAndFetch(binary = "qemu-system-x86_64"): Promise<LiveSchema> {
  await using vm = await launch({ binary, machine: "none", args: ["-nodefaults"] });
  return await fetchWith(vm.qmp);
}

/** Start `qemu-storage-daemon` (or `binary`), fetch its schema, and stop it. */
export async function launchDaemonAndFetch(binary?: string): Promise<LiveSchema> {
  await using qsd = await launchStorageDaemon({ binary });
  return await fetchWith(qsd.qmp as unknown as QmpClient);
}

/** Locate `qemu-qmp-ref.7` / `.7.gz` (or another `page`) under the usual man directories. */
export async function findManPage(
  roots = ["/usr/share/man", "/usr/local/share/man"],
  page = "qemu-qmp-ref",
): Promise<string | null> {
  for (const root of roots) {
    for (const f of [`${page}.7.gz`, `${page}.7`]) {
      try {
        await Deno.stat(`${root}/man7/${f}`);
        return `${root}/man7/${f}`;
      } catch {
        // try the next candidate
      }
    }
  }
  return null;
}

/** Read a man page, decompressing `.gz` files. */
export async function readManPage(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  if (!path.endsWith(".gz")) return new TextDecoder().decode(bytes);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

/** Result of {@linkcode generate}. */
export interface Generated {
  text: string;
  names: NameMap;
  stats: { recovered: number; implicit: number; synthesized: number; total: number };
}

/**
 * Shares named types with another generated module: every named type of `text` whose
 * declaration is the same as in `shared` (the text of `from`, e.g. `lib/qapi/types.ts`;
 * documentation links aside) is imported from it and re-exported instead of declared again,
 * so both modules use one set of types. Returns the new text and the names that differ.
 */
export function shareTypes(
  text: string,
  shared: string,
  from: string,
): { text: string; shared: string[]; differing: string[] } {
  const declarations = (t: string) => {
    const out = new Map<string, string>();
    for (const block of t.split(/\n(?=\/\*\*)/)) {
      const m = /^export (?:interface|type) (\w+)/m.exec(block);
      if (m) out.set(m[1], block);
    }
    return out;
  };
  const normal = (block: string) => block.replace(/https:\/\/\S+/g, "").trim();
  const theirs = declarations(shared);
  // Only the named types: everything after the events interface.
  const eventsAt = text.indexOf("\n}\n", text.search(/^export interface \w*Events \{/m));
  const head = text.slice(0, eventsAt + 3);
  const body = text.slice(eventsAt + 3);
  const names: string[] = [];
  const differing: string[] = [];
  const kept: string[] = [];
  for (const block of body.split(/\n(?=\/\*\*)/)) {
    const name = /^export (?:interface|type) (\w+)/m.exec(block)?.[1];
    const other = name === undefined ? undefined : theirs.get(name);
    if (name !== undefined && other !== undefined && normal(other) === normal(block)) {
      names.push(name);
      continue;
    }
    if (name !== undefined && other !== undefined) differing.push(name);
    kept.push(block);
  }
  if (names.length === 0) return { text, shared: names, differing };
  // The order deno fmt keeps import specifiers in: case-insensitive.
  names.sort((a, b) => cmp(a.toLowerCase(), b.toLowerCase()) || cmp(a, b));
  const rest = kept.join("\n").trim();
  // Import what this module's own declarations use; re-export them all.
  const here = head + rest;
  const used = names.filter((n) => new RegExp(`\\b${n}\\b`).test(here));
  const lines = (list: string[]) => list.map((n) => `  ${n},`).join("\n");
  const importBlock = `import type {\n${lines(used)}\n} from "${from}";\n\n` +
    `export type {\n${lines(names)}\n} from "${from}";\n`;
  const moduleEnd = head.indexOf(" */\n", head.indexOf("@module")) + 4;
  return {
    text: head.slice(0, moduleEnd) + "\n" + importBlock + head.slice(moduleEnd) +
      (rest ? "\n" + rest + "\n" : ""),
    shared: names,
    differing,
  };
}

/** Pure pipeline: schema entries + manual roff text -> TypeScript module text. */
export function generate(
  entries: SchemaEntry[],
  manRoff: string,
  opts: Partial<RenderOptions> = {},
): Generated {
  const schema = new Schema(entries);
  const man = parseManPage(manRoff);
  const names = recoverNames(schema, man, PREAMBLE_NAMES);
  const qemuVersion = opts.qemuVersion ?? man.version ?? "unknown";
  const text = renderTypes(schema, man, names, {
    qemuVersion,
    docBase: opts.docBase ?? defaultDocBase(qemuVersion, opts.flavor),
    flavor: opts.flavor,
  });
  const stats = { recovered: 0, implicit: 0, synthesized: 0, total: 0 };
  for (const t of names.byId.values()) {
    stats[t.source]++;
    stats.total++;
  }
  return { text, names, stats };
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

const USAGE =
  `Usage: deno run -A scripts/gen-qapi.ts (--schema FILE | --qmp ADDRESS | --launch [BINARY])
  [--man PATH] [--out FILE] [--check] [--qemu-version X.Y.Z] [--doc-base URL]
  [--save-schema FILE] [--save-version FILE] [--lenient] [--retry] [--quiet] [-v] [-h]
  [--storage-daemon]  (qemu-storage-daemon: --launch starts it, default --man
                       qemu-storage-daemon-qmp-ref(7), --out lib/qapi/storage_daemon_types.ts)`;

/** The command line, parsed strictly (unknown options and stray arguments are usage errors). */
function parseCommandLine(argv: string[]): Record<string, string | true | undefined> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      schema: { type: "string" },
      qmp: { type: "string" },
      launch: { type: "boolean" },
      man: { type: "string" },
      out: { type: "string" },
      check: { type: "boolean" },
      "qemu-version": { type: "string" },
      "doc-base": { type: "string" },
      "save-schema": { type: "string" },
      "save-version": { type: "string" },
      lenient: { type: "boolean" },
      retry: { type: "boolean" },
      quiet: { type: "boolean" },
      verbose: { type: "boolean", short: "v" },
      help: { type: "boolean", short: "h" },
      "storage-daemon": { type: "boolean" },
    },
  });
  const opt: Record<string, string | true | undefined> = {};
  for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== false) opt[k] = v;
  if (opt.help) return opt;
  const sources = ["schema", "qmp", "launch"].filter((k) => opt[k] !== undefined);
  if (sources.length !== 1) {
    throw new UsageError(
      sources.length === 0
        ? "one of --schema, --qmp, --launch is required"
        : `--${sources.join(" and --")} conflict: give one schema source`,
    );
  }
  // `--launch [BINARY]`: the one positional argument is the binary.
  if (positionals.length > 0 && !opt.launch) {
    throw new UsageError(`unexpected argument "${positionals[0]}"`);
  }
  if (positionals.length > 1) {
    throw new UsageError(`--launch takes one BINARY, got ${positionals.length}`);
  }
  if (positionals.length === 1) opt.launch = positionals[0];
  if (opt.retry && opt.qmp === undefined) throw new UsageError("--retry applies to --qmp");
  return opt;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--agent")) return await agentMain(argv.filter((a) => a !== "--agent"));
  const opt = parseCommandLine(argv);
  if (opt.help) {
    console.log(USAGE);
    return 0;
  }
  const log = (s: string) => opt.quiet ? undefined : console.error(s);
  const t0 = performance.now();
  const sd = opt["storage-daemon"] === true;
  const page = sd ? "qemu-storage-daemon-qmp-ref" : "qemu-qmp-ref";

  let entries: SchemaEntry[];
  let liveVersion: string | undefined;
  if (typeof opt.schema === "string") {
    entries = JSON.parse(await Deno.readTextFile(opt.schema));
  } else if (opt.qmp !== undefined || opt.launch !== undefined) {
    const binary = typeof opt.launch === "string" ? opt.launch : undefined;
    const live = typeof opt.qmp === "string"
      ? await fetchSchemaLive(opt.qmp, "10s", opt.retry === true)
      : sd
      ? await launchDaemonAndFetch(binary)
      : await launchAndFetch(binary);
    entries = live.schema;
    const v = live.version.qemu;
    liveVersion = `${v.major}.${v.minor}.${v.micro}`;
    log(`fetched ${entries.length} schema entries from QEMU ${liveVersion}`);
    if (typeof opt["save-schema"] === "string") {
      await Deno.writeTextFile(opt["save-schema"], JSON.stringify(entries, null, 2) + "\n");
    }
    if (typeof opt["save-version"] === "string") {
      await Deno.writeTextFile(opt["save-version"], JSON.stringify(live.version, null, 2) + "\n");
    }
  } else throw new UsageError("one of --schema, --qmp, --launch is required");

  const manPath = typeof opt.man === "string" ? opt.man : await findManPage(undefined, page);
  if (!manPath) throw new Error(`${page}(7) not found; pass --man PATH`);
  const roff = await readManPage(manPath);
  const manVersion = parseManPage(roff).version;
  if (liveVersion && manVersion && liveVersion !== manVersion) {
    log(`warning: QEMU is ${liveVersion} but ${manPath} documents ${manVersion}`);
  }
  const qemuVersion = typeof opt["qemu-version"] === "string"
    ? opt["qemu-version"]
    : liveVersion ?? manVersion ?? "unknown";
  const gen = generate(entries, roff, {
    qemuVersion,
    docBase: typeof opt["doc-base"] === "string" ? opt["doc-base"] : undefined,
    flavor: sd ? "storage-daemon" : "qmp",
  });
  const out = typeof opt.out === "string"
    ? opt.out
    : sd
    ? "lib/qapi/storage_daemon_types.ts"
    : "lib/qapi/types.ts";
  if (sd) {
    // The daemon's types are the system emulator's (same QAPI): import them from types.ts.
    const qmpTypes = out.replace(/[^/]*$/, "types.ts");
    const sharedText = await Deno.readTextFile(qmpTypes);
    const r = shareTypes(gen.text, sharedText, "./types.ts");
    gen.text = r.text;
    log(`${r.shared.length} types shared with ${qmpTypes}, ${r.differing.length} differ`);
    for (const name of r.differing) log(`note: ${name} differs from ${qmpTypes}'s; declared here`);
  }
  const ms = Math.round(performance.now() - t0);

  const s = gen.stats;
  log(
    `types: ${s.total} (${s.recovered} QAPI names recovered, ${s.implicit} unnamed in QAPI, ` +
      `${s.synthesized} synthesized); ${ms} ms`,
  );
  for (const w of gen.names.warnings) log(`warning: ${w}`);
  if (gen.names.warnings.length && !opt.lenient) {
    log("name recovery produced warnings (manual and schema disagree); use --lenient to accept");
    return 1;
  }

  let current: string | null = null;
  try {
    current = await Deno.readTextFile(out);
  } catch {
    current = null;
  }
  if (opt.check) {
    if (current !== gen.text) {
      log(`${out} is out of date; regenerate with scripts/gen-qapi.ts`);
      return 1;
    }
    log(`${out} is up to date`);
    return 0;
  }
  if (current !== gen.text) {
    await Deno.mkdir(out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
    await Deno.writeTextFile(out, gen.text);
    log(`wrote ${out}`);
  } else log(`${out} unchanged`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    // As the qmp commands: one line (the stack with --verbose); 2 for usage errors, else 1.
    const verbose = Deno.args.includes("--verbose") || Deno.args.includes("-v");
    const usage = e instanceof UsageError ||
      String((e as { code?: unknown })?.code).startsWith("ERR_PARSE_ARGS");
    console.error(formatError("gen-qapi", e, verbose));
    Deno.exit(usage ? 2 : 1);
  }
}
