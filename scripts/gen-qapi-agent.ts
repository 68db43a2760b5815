/**
 * Generate TypeScript types for the QEMU guest agent (QGA) from its QAPI *source* schema
 * (`qga/qapi-schema.json`, shipped by Debian's `qemu-guest-agent` package as
 * `/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz`). Unlike QMP's introspection output, the
 * source keeps real type names and doc comments, so no name recovery is needed.
 *
 * Usage (through gen-qapi):
 *   deno task gen-qapi --agent [--schema FILE[.gz]] [--out FILE] [--check] [--quiet]
 * Defaults: the installed package's schema, else tests/fixtures/qga-qapi-schema-7.2.qapi;
 * output lib/qapi/agent_types.ts.
 *
 * The pure part (source text -> model -> TypeScript text) has no side effects.
 *
 * @module
 */
import { syncGeneratedFile } from "./generated_file.ts";

// ---------------------------------------------------------------------------------------------
// Parsing the QAPI source format: Python-like literals, single quotes, '#' comments, '##' docs
// ---------------------------------------------------------------------------------------------

/** A QAPI value: strings, booleans, lists and dicts. */
export type QapiValue = string | boolean | QapiValue[] | { [key: string]: QapiValue };

/** A parsed doc block. */
export interface QapiDoc {
  /** The symbol the block documents (`@name:` first line), if any. */
  symbol?: string;
  /** Free text paragraphs. */
  body: string[];
  /** `@member: text`. */
  members: Map<string, string>;
  /** `Returns:`, `Since:`, `Notes:` ... sections by lower-case name. */
  sections: Map<string, string>;
}

/** One top-level expression with the doc block before it. */
export interface QapiExpr {
  /** The expression (a dict). */
  expr: Record<string, QapiValue>;
  /** Its doc block, when it has one. */
  doc?: QapiDoc;
}

/** Parses a QAPI source file into its expressions. Throws with a line number on bad input. */
export function parseQapiSource(text: string): QapiExpr[] {
  const out: QapiExpr[] = [];
  let i = 0;
  let line = 1;
  let pendingDoc: QapiDoc | undefined;
  const fail = (msg: string): never => {
    throw new Error(`QAPI schema line ${line}: ${msg}`);
  };
  const skipSpaceAndComments = (top: boolean) => {
    while (i < text.length) {
      const c = text[i];
      if (c === "\n") {
        line++;
        i++;
      } else if (c === " " || c === "\t" || c === "\r") i++;
      else if (c === "#") {
        const atLineStart = i === 0 || text[i - 1] === "\n";
        if (
          top && atLineStart && text.startsWith("##", i) &&
          /^##[ \t]*(\n|$)/.test(text.slice(i, i + 4))
        ) {
          pendingDoc = readDoc();
        } else {
          while (i < text.length && text[i] !== "\n") i++;
        }
      } else break;
    }
  };
  const readDoc = (): QapiDoc => {
    // From "##\n" to the next line that is exactly "##".
    const lines: string[] = [];
    while (i < text.length && text[i] !== "\n") i++;
    while (i < text.length) {
      i++; // the newline
      line++;
      const end = text.indexOf("\n", i);
      const l = text.slice(i, end < 0 ? text.length : end);
      i = end < 0 ? text.length : end;
      if (/^##\s*$/.test(l)) break;
      if (!l.startsWith("#")) fail("doc comment line does not start with '#'");
      lines.push(l.replace(/^# ?/, ""));
    }
    return parseDoc(lines);
  };
  const value = (): QapiValue => {
    skipSpaceAndComments(false);
    const c = text[i];
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) fail("unterminated string");
      const s = text.slice(i + 1, end);
      if (s.includes("\n") || s.includes("\\")) fail("unsupported string");
      i = end + 1;
      return s;
    }
    if (c === "{") {
      i++;
      const obj: Record<string, QapiValue> = {};
      skipSpaceAndComments(false);
      if (text[i] === "}") {
        i++;
        return obj;
      }
      while (true) {
        const k = value();
        if (typeof k !== "string") fail("dict keys must be strings");
        skipSpaceAndComments(false);
        if (text[i] !== ":") fail("expected ':'");
        i++;
        obj[k as string] = value();
        skipSpaceAndComments(false);
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail(`expected ',' or '}', got ${JSON.stringify(text[i])}`);
      }
    }
    if (c === "[") {
      i++;
      const arr: QapiValue[] = [];
      skipSpaceAndComments(false);
      if (text[i] === "]") {
        i++;
        return arr;
      }
      while (true) {
        arr.push(value());
        skipSpaceAndComments(false);
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail(`expected ',' or ']', got ${JSON.stringify(text[i])}`);
      }
    }
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    return fail(`unexpected ${JSON.stringify(c ?? "end of file")}`);
  };
  while (true) {
    skipSpaceAndComments(true);
    if (i >= text.length) break;
    if (text[i] !== "{") fail("expected a top-level '{'");
    const expr = value() as Record<string, QapiValue>;
    const doc = pendingDoc;
    pendingDoc = undefined;
    out.push(doc ? { expr, doc } : { expr });
  }
  return out;
}

const SECTION = /^(Returns|Since|Notes?|Examples?|Errors|TODO|Features)\s*:\s*(.*)$/;

/** Parses the lines of a doc block (without the leading '# '). */
export function parseDoc(lines: string[]): QapiDoc {
  const doc: QapiDoc = { body: [], members: new Map(), sections: new Map() };
  let k = 0;
  const first = /^@([\w-]+):\s*(.*)$/.exec(lines[0] ?? "");
  if (first) {
    doc.symbol = first[1];
    k = 1;
    if (first[2]) doc.body.push(first[2]);
  }
  let where: { kind: "body" } | { kind: "member"; name: string } | {
    kind: "section";
    name: string;
  } = { kind: "body" };
  let paragraph: string[] = [];
  const flush = () => {
    if (paragraph.length === 0) return;
    const text = paragraph.join(" ").replace(/\s+/g, " ").trim();
    paragraph = [];
    if (!text) return;
    if (where.kind === "body") doc.body.push(text);
    else if (where.kind === "member") {
      const prev = doc.members.get(where.name);
      doc.members.set(where.name, prev ? `${prev} ${text}` : text);
    } else {
      const prev = doc.sections.get(where.name);
      doc.sections.set(where.name, prev ? `${prev}\n\n${text}` : text);
    }
  };
  for (; k < lines.length; k++) {
    const l = lines[k];
    const member = /^@([\w-]+):\s*(.*)$/.exec(l);
    const section = SECTION.exec(l);
    if (member) {
      flush();
      where = { kind: "member", name: member[1] };
      paragraph.push(member[2]);
    } else if (section) {
      flush();
      const name = section[1].toLowerCase().replace(/s$/, "");
      where = { kind: "section", name };
      paragraph.push(section[2]);
    } else if (l.trim() === "") {
      flush();
      if (
        where.kind === "member" || (where.kind === "section" && where.name !== "note" &&
          where.name !== "example")
      ) where = { kind: "body" };
    } else paragraph.push(l);
  }
  flush();
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/** Rendering options. */
export interface AgentRenderOptions {
  /** Names the schema file in the header (default `qga/qapi-schema.json`). */
  source?: string;
}

const LINE_WIDTH = 100;
const EMPTY = "Record<string, never>";
// 64-bit integers beyond ±(2^53-1) arrive as exact bigints (lib/json.ts); narrower ones never do.
const BUILTINS: Record<string, string> = {
  str: "string",
  int: "number | bigint",
  int8: "number",
  int16: "number",
  int32: "number",
  int64: "number | bigint",
  uint8: "number",
  uint16: "number",
  uint32: "number",
  uint64: "number | bigint",
  size: "number | bigint",
  number: "number",
  bool: "boolean",
  any: "unknown",
  null: "null",
};

/** Names of the hand-written helpers of the generated preamble. */
export const AGENT_PREAMBLE_NAMES = [
  "AgentCommands",
  "AgentCommandName",
  "AgentCommandArgs",
  "AgentCommandReturn",
  "AgentNoReplyCommand",
  "AGENT_NO_REPLY_COMMANDS",
  "AGENT_COMMAND_ARGUMENTS",
];

function pascal(s: string): string {
  return s.split(/[-_]/).map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join("");
}

function key(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

/** QAPI doc markup to Markdown-ish JSDoc text; never closes the comment. */
function docText(s: string): string {
  return s.replace(/@([\w-]+)/g, "`$1`").replace(/\*\//g, "*\\/");
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  for (const para of text.split("\n")) {
    if (para.trim() === "") {
      out.push("");
      continue;
    }
    let cur = "";
    for (const word of para.split(/\s+/).filter(Boolean)) {
      if (cur && cur.length + 1 + word.length > width) {
        out.push(cur);
        cur = word;
      } else cur = cur ? `${cur} ${word}` : word;
    }
    if (cur) out.push(cur);
  }
  return out;
}

function jsdoc(indent: string, paragraphs: string[], tags: string[] = []): string[] {
  const width = LINE_WIDTH - indent.length - 3;
  const lines: string[] = [];
  for (const p of paragraphs) {
    if (lines.length) lines.push("");
    lines.push(...wrap(docText(p), width));
  }
  for (const t of tags) {
    const tag = /^@\w+ /.exec(t)?.[0] ?? "";
    lines.push(...wrap(tag + docText(t.slice(tag.length)), width));
  }
  if (lines.length === 0) lines.push("(undocumented)");
  if (lines.length === 1 && `${indent}/** ${lines[0]} */`.length <= LINE_WIDTH) {
    return [`${indent}/** ${lines[0]} */`];
  }
  return [
    `${indent}/**`,
    ...lines.map((l) => l ? `${indent} * ${l}` : `${indent} *`),
    `${indent} */`,
  ];
}

function unionAlias(name: string, members: string[]): string[] {
  const one = `export type ${name} = ${members.join(" | ")};`;
  if (one.length <= LINE_WIDTH) return [one];
  return [
    `export type ${name} =`,
    ...members.map((m, i) => `  | ${m}${i === members.length - 1 ? ";" : ""}`),
  ];
}

function ifNote(cond: QapiValue | undefined): string[] {
  if (cond === undefined) return [];
  const c = typeof cond === "string" ? cond : JSON.stringify(cond);
  const human = c === "CONFIG_POSIX"
    ? "POSIX guests only"
    : c === "CONFIG_WIN32"
    ? "Windows guests only"
    : `only when ${c}`;
  return [`Availability: ${human}.`];
}

/** The result of {@link generateAgentTypes}. */
export interface AgentGenerated {
  /** The TypeScript module text. */
  text: string;
  /** Counts. */
  stats: { commands: number; types: number };
}

/** Schema source text -> TypeScript module text. Deterministic. */
export function generateAgentTypes(
  source: string,
  options: AgentRenderOptions = {},
): AgentGenerated {
  const exprs = parseQapiSource(source);
  const types = new Map<string, QapiExpr>();
  const commands: QapiExpr[] = [];
  for (const e of exprs) {
    const kind = ["struct", "enum", "union", "alternate", "command"].find((k) => k in e.expr);
    if (!kind) continue; // pragma, include
    const name = e.expr[kind];
    if (typeof name !== "string") throw new Error(`${kind} without a name`);
    if (kind === "command") commands.push(e);
    else {
      if (types.has(name)) throw new Error(`type ${name} defined twice`);
      types.set(name, e);
    }
  }
  const used = new Set([...types.keys(), ...AGENT_PREAMBLE_NAMES]);
  const extra: string[][] = []; // synthesized argument types, rendered with the others

  const tsType = (t: QapiValue): string => {
    if (Array.isArray(t)) {
      const inner = tsType(t[0]);
      return /^[\w.]+$/.test(inner) ? `${inner}[]` : `(${inner})[]`;
    }
    if (typeof t !== "string") throw new Error(`unsupported type ${JSON.stringify(t)}`);
    if (t in BUILTINS) return BUILTINS[t];
    if (!types.has(t)) throw new Error(`unknown type ${t}`);
    return t;
  };
  const members = (
    data: Record<string, QapiValue>,
    doc: QapiDoc | undefined,
    indent: string,
  ): string[] => {
    const lines: string[] = [];
    for (const [raw, spec] of Object.entries(data)) {
      const optional = raw.startsWith("*");
      const name = optional ? raw.slice(1) : raw;
      const isDict = typeof spec === "object" && !Array.isArray(spec);
      const type = isDict ? (spec as Record<string, QapiValue>).type : spec;
      const cond = isDict ? (spec as Record<string, QapiValue>).if : undefined;
      const text = doc?.members.get(name);
      lines.push(...jsdoc(indent, text ? [text] : [], ifNote(cond)));
      lines.push(`${indent}${key(name)}${optional ? "?" : ""}: ${tsType(type)};`);
    }
    return lines;
  };
  const objectType = (name: string, data: Record<string, QapiValue>, doc?: QapiDoc): string[] =>
    Object.keys(data).length === 0
      ? [`export type ${name} = ${EMPTY};`]
      : [`export interface ${name} {`, ...members(data, doc, "  "), "}"];
  const typeDoc = (e: QapiExpr): string[] => {
    const tags = [...ifNote(e.expr.if)];
    const since = e.doc?.sections.get("since");
    const note = e.doc?.sections.get("note");
    const paras = [...(e.doc?.body ?? [])];
    if (paras.length === 0) paras.push(`QGA ${kindOf(e.expr)} \`${name(e.expr)}\`.`);
    if (note) paras.push(`Note: ${note}`);
    if (since) tags.push(`@since ${since}`);
    return jsdoc("", paras, tags);
  };

  const rendered: string[][] = [];
  for (const name of [...types.keys()].sort(cmp)) {
    const e = types.get(name)!;
    const x = e.expr;
    const lines = [...typeDoc(e)];
    if ("enum" in x) {
      const values = (x.data as QapiValue[]).map((v) =>
        typeof v === "string" ? v : String((v as Record<string, QapiValue>).name)
      );
      const valueDocs = values.filter((v) => e.doc?.members.get(v)).map((v) =>
        `- \`${v}\`: ${e.doc!.members.get(v)}`
      );
      if (valueDocs.length) {
        lines.splice(
          0,
          lines.length,
          ...jsdoc("", [...(e.doc?.body ?? [])], [
            ...valueDocs,
            ...ifNote(x.if),
            ...(e.doc?.sections.get("since") ? [`@since ${e.doc.sections.get("since")}`] : []),
          ]),
        );
      }
      lines.push(...unionAlias(name, values.map((v) => JSON.stringify(v))));
    } else if ("struct" in x) {
      if (x.base !== undefined) throw new Error(`struct ${name}: 'base' is not supported`);
      lines.push(...objectType(name, x.data as Record<string, QapiValue>, e.doc));
    } else if ("alternate" in x) {
      lines.push(
        ...unionAlias(name, Object.values(x.data as Record<string, QapiValue>).map(tsType)),
      );
    } else if ("union" in x) {
      const base = x.base as Record<string, QapiValue> | string;
      const baseName = typeof base === "string" ? base : `${name}Base`;
      if (typeof base !== "string") {
        if (used.has(baseName)) throw new Error(`name clash: ${baseName}`);
        used.add(baseName);
        extra.push([
          ...jsdoc("", [`The common members of \`${name}\`.`]),
          ...objectType(baseName, base, e.doc),
        ]);
      }
      const disc = x.discriminator as string;
      const baseData = typeof base === "string"
        ? types.get(base)!.expr.data as Record<string, QapiValue>
        : base;
      const tagType = baseData[disc] ?? baseData[`*${disc}`];
      const tagEnum = types.get(tagType as string)!.expr.data as QapiValue[];
      const branches = x.data as Record<string, QapiValue>;
      const rest = tagEnum.map((v) =>
        typeof v === "string" ? v : String((v as Record<string, QapiValue>).name)
      ).filter((v) => !(v in branches));
      const arms = Object.entries(branches).map(([tag, t]) =>
        `(${baseName} & { ${key(disc)}: ${JSON.stringify(tag)} } & ${tsType(t)})`
      );
      if (rest.length) {
        const taken = Object.keys(branches).map((v) => JSON.stringify(v)).join(" | ");
        arms.push(`(${baseName} & { ${key(disc)}: Exclude<${tagType}, ${taken}> })`);
      }
      if (arms.length === 1) arms[0] = arms[0].slice(1, -1);
      lines.push(...unionAlias(name, arms));
    }
    rendered.push(lines);
  }

  const commandLines: string[] = [];
  const noReply: string[] = [];
  const argNames: string[] = [];
  for (
    const c of [...commands].sort((a, b) => cmp(a.expr.command as string, b.expr.command as string))
  ) {
    const name = c.expr.command as string;
    let args = EMPTY;
    const data = c.expr.data;
    if (typeof data === "string") args = tsType(data);
    else if (data && Object.keys(data).length) {
      args = `${pascal(name)}Arguments`;
      if (used.has(args)) throw new Error(`name clash: ${args}`);
      used.add(args);
      extra.push([
        ...jsdoc("", [`Arguments of \`${name}\`.`], ifNote(c.expr.if)),
        ...objectType(args, data as Record<string, QapiValue>, c.doc),
      ]);
    }
    const argData = typeof data === "string"
      ? types.get(data)!.expr.data as Record<string, QapiValue>
      : (data as Record<string, QapiValue> | undefined) ?? {};
    const argList = Object.keys(argData).map((k) => JSON.stringify(k.replace(/^\*/, "")));
    const entry = `  ${JSON.stringify(name)}: [${argList.join(", ")}],`;
    if (entry.length <= LINE_WIDTH) argNames.push(entry);
    else argNames.push(`  ${JSON.stringify(name)}: [`, ...argList.map((a) => `    ${a},`), "  ],");
    const ret = c.expr.returns === undefined ? EMPTY : tsType(c.expr.returns);
    const paras = [...(c.doc?.body ?? [])];
    const returns = c.doc?.sections.get("return");
    if (returns) paras.push(`Returns: ${returns}`);
    const note = c.doc?.sections.get("note");
    if (note) paras.push(`Note: ${note}`);
    const tags = [...ifNote(c.expr.if)];
    if (c.expr["success-response"] === false) {
      noReply.push(name);
      tags.push("Sends no reply when it succeeds.");
    }
    const since = c.doc?.sections.get("since");
    if (since) tags.push(`@since ${since}`);
    commandLines.push(...jsdoc("  ", paras, tags));
    const one = `  ${JSON.stringify(name)}: { args: ${args}; return: ${ret} };`;
    if (one.length <= LINE_WIDTH) commandLines.push(one);
    else {
      commandLines.push(
        `  ${JSON.stringify(name)}: {`,
        `    args: ${args};`,
        `    return: ${ret};`,
        `  };`,
      );
    }
  }

  const sourceName = options.source ?? "qga/qapi-schema.json";
  const header = [
    "// Generated by `deno task gen-qapi --agent` (scripts/gen-qapi-agent.ts) from QEMU's guest",
    `// agent schema (${sourceName}). Do not edit by hand.`,
    "",
    "/**",
    " * Types of the QEMU guest agent (QGA) protocol: every command's arguments and return value,",
    " * generated from the agent's QAPI schema with its documentation.",
    " *",
    " * @module",
    " */",
    "",
    "/** Agent commands by name: `args` is the `arguments` object, `return` the reply's `return`. */",
    "export interface AgentCommands {",
    ...commandLines,
    "}",
    "",
    "/** The name of a guest agent command. */",
    "export type AgentCommandName = keyof AgentCommands;",
    "",
    "/** The arguments of agent command `K`. */",
    'export type AgentCommandArgs<K extends AgentCommandName> = AgentCommands[K]["args"];',
    "",
    "/** The return value of agent command `K`. */",
    'export type AgentCommandReturn<K extends AgentCommandName> = AgentCommands[K]["return"];',
    "",
    "/** Commands that send no reply when they succeed (`'success-response': false`). */",
    ...unionAlias("AgentNoReplyCommand", noReply.map((n) => JSON.stringify(n))),
    "",
    "/** {@link AgentNoReplyCommand} as a list. */",
    `export const AGENT_NO_REPLY_COMMANDS: readonly AgentNoReplyCommand[] = [`,
    ...noReply.map((n) => `  ${JSON.stringify(n)},`),
    "];",
    "",
    "/** The argument names of every agent command (for completion and help). */",
    "export const AGENT_COMMAND_ARGUMENTS: { readonly [K in AgentCommandName]: readonly string[] } = {",
    ...argNames,
    "};",
  ];
  const blocks = [...rendered, ...extra].sort((a, b) => cmp(declName(a), declName(b)));
  const text = [header.join("\n"), ...blocks.map((b) => b.join("\n"))].join("\n\n") + "\n";
  return { text, stats: { commands: commands.length, types: blocks.length } };
}

function kindOf(expr: Record<string, QapiValue>): string {
  return ["struct", "enum", "union", "alternate", "command"].find((k) => k in expr) ?? "type";
}

function name(expr: Record<string, QapiValue>): string {
  return String(expr[kindOf(expr)]);
}

function declName(lines: string[]): string {
  for (const l of lines) {
    const m = /^export (?:interface|type) (\w+)/.exec(l);
    if (m) return m[1];
  }
  return "";
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// CLI (called by scripts/gen-qapi.ts --agent)
// ---------------------------------------------------------------------------------------------

/** Where the Debian package installs the schema. */
export const INSTALLED_AGENT_SCHEMA = "/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz";
/** The checked-in copy (QEMU 7.2's), used when the package is not installed. */
export const FIXTURE_AGENT_SCHEMA = "tests/fixtures/qga-qapi-schema-7.2.qapi";

/** Reads a schema file, gunzipping `.gz`. */
export async function readAgentSchema(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  if (!path.endsWith(".gz")) return new TextDecoder().decode(bytes);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

const USAGE =
  "Usage: deno task gen-qapi --agent [--schema FILE[.gz]] [--out FILE] [--check] [--quiet]";

/** The `--agent` command line; returns the exit code. */
export async function agentMain(argv: string[]): Promise<number> {
  const opt: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [k, inline] = a.startsWith("--") ? a.slice(2).split(/=(.*)/s, 2) : [a];
    if (["check", "quiet", "help"].includes(k)) opt[k] = true;
    else if (["schema", "out"].includes(k)) {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`--${k} needs a value\n${USAGE}`);
      opt[k] = v;
    } else throw new Error(`unexpected argument ${a}\n${USAGE}`);
  }
  if (opt.help) {
    console.log(USAGE);
    return 0;
  }
  const log = (s: string) => opt.quiet ? undefined : console.error(s);
  let schema = typeof opt.schema === "string" ? opt.schema : undefined;
  if (!schema) {
    try {
      await Deno.stat(INSTALLED_AGENT_SCHEMA);
      schema = INSTALLED_AGENT_SCHEMA;
    } catch {
      schema = FIXTURE_AGENT_SCHEMA;
    }
  }
  const gen = generateAgentTypes(await readAgentSchema(schema));
  log(`agent schema ${schema}: ${gen.stats.commands} commands, ${gen.stats.types} types`);
  const out = typeof opt.out === "string" ? opt.out : "lib/qapi/agent_types.ts";
  return await syncGeneratedFile(out, gen.text, {
    check: Boolean(opt.check),
    log,
    regenerate: "deno task gen-qapi --agent",
  });
}
