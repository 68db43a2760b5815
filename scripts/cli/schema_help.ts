/**
 * A model of QEMU's introspection schema (`query-qmp-schema`) for the shell:
 * command and event names, argument members (through dotted paths and union
 * variants), enum values, and rendered `help CMD` text.
 *
 * Introspection replaces non-builtin type names with numbers (`"263"`); the
 * model resolves them to builtin names (`str`, `int`, ...) or to JSON kinds
 * (`object`, `enum`, `array of ...`).
 *
 * @module
 */

/** One entry of `query-qmp-schema` (`SchemaInfo`); only the fields used here are typed. */
export interface SchemaEntry {
  /** Entity name (types are numbered in introspection). */
  name: string;
  /** `builtin`, `enum`, `array`, `object`, `alternate`, `command` or `event`. */
  "meta-type": string;
  /** Command/event argument type. */
  "arg-type"?: string;
  /** Command return type. */
  "ret-type"?: string;
  /** True for commands that may run out-of-band. */
  "allow-oob"?: boolean;
  /** Object members, alternate branches, or enum members. */
  members?: { name?: string; type?: string; default?: unknown; features?: string[] }[];
  /** Union tag member name. */
  tag?: string;
  /** Union variants. */
  variants?: { case: string; type: string }[];
  /** Enum values. */
  values?: string[];
  /** Array element type. */
  "element-type"?: string;
  /** Builtin JSON type. */
  "json-type"?: string;
  /** Feature flags (`deprecated`, `unstable`, ...). */
  features?: string[];
}

/** An object member as shown in help and completion. */
export interface MemberInfo {
  /** Member name. */
  name: string;
  /** Type name as in the schema (builtin name or number). */
  type: string;
  /** True when the member may be left out. */
  optional: boolean;
  /** Feature flags (`deprecated`, `unstable`). */
  features: string[];
}

const BUILTIN_LABEL: Record<string, string> = {
  str: "str",
  int: "int",
  bool: "bool",
  number: "number",
  null: "null",
  any: "any",
};

/**
 * The schema, indexed. Build it with {@link SchemaModel.fromSchema} from
 * `query-qmp-schema`, or {@link SchemaModel.fromCommandNames} (names only) when
 * introspection is unavailable.
 */
export class SchemaModel {
  readonly #byName = new Map<string, SchemaEntry>();
  readonly #commands: string[];
  readonly #events: string[];

  private constructor(entries: SchemaEntry[], commands?: string[]) {
    for (const e of entries) this.#byName.set(e.name, e);
    this.#commands = (commands ??
      entries.filter((e) => e["meta-type"] === "command").map((e) => e.name)).sort();
    this.#events = entries.filter((e) => e["meta-type"] === "event").map((e) => e.name).sort();
  }

  /** Builds the model from the return value of `query-qmp-schema`. */
  static fromSchema(entries: readonly SchemaEntry[]): SchemaModel {
    return new SchemaModel([...entries]);
  }

  /** Builds a names-only model (e.g. from `query-commands`): no argument information. */
  static fromCommandNames(names: readonly string[]): SchemaModel {
    return new SchemaModel([], [...names]);
  }

  /** True when argument information is available. */
  get hasTypes(): boolean {
    return this.#byName.size > 0;
  }

  /** All command names, sorted. */
  commands(): string[] {
    return this.#commands;
  }

  /** All event names, sorted. */
  events(): string[] {
    return this.#events;
  }

  /** True when `name` is a known command. */
  hasCommand(name: string): boolean {
    return this.#commands.includes(name);
  }

  /** The raw schema entry named `name`. */
  entry(name: string): SchemaEntry | undefined {
    return this.#byName.get(name);
  }

  /**
   * The members of an object type, including, for a union, the members of the
   * variant selected by `tagValue` — or of every variant when `tagValue` is
   * not given (deduplicated, variant-only members marked optional).
   */
  objectMembers(typeName: string, tagValue?: unknown): MemberInfo[] | undefined {
    const t = this.#byName.get(typeName);
    if (!t || t["meta-type"] !== "object") return undefined;
    const own = (t.members ?? []).map(toMember);
    if (!t.tag || !t.variants?.length) return own;
    const variants = typeof tagValue === "string"
      ? t.variants.filter((v) => v.case === tagValue)
      : t.variants;
    const seen = new Set(own.map((m) => m.name));
    const out = [...own];
    for (const v of variants) {
      for (const m of this.objectMembers(v.type) ?? []) {
        if (seen.has(m.name)) continue;
        seen.add(m.name);
        out.push(typeof tagValue === "string" ? m : { ...m, optional: true });
      }
    }
    return out;
  }

  /** The union tag name and cases of an object type, when it is a union. */
  unionInfo(typeName: string): { tag: string; cases: string[] } | undefined {
    const t = this.#byName.get(typeName);
    if (!t?.tag || !t.variants) return undefined;
    return { tag: t.tag, cases: t.variants.map((v) => v.case) };
  }

  /**
   * The object type reached from `typeName` by following `path` (member names),
   * looking through alternates and arrays; `args` (the values given so far at
   * that level and below) select union variants.
   */
  resolvePath(
    typeName: string,
    path: readonly string[],
    args: Record<string, unknown> = {},
  ): string | undefined {
    let type: string | undefined = this.objectBranch(typeName);
    let values: unknown = args;
    for (const seg of path) {
      if (type === undefined) return undefined;
      const members = this.objectMembers(type, tagValueOf(this, type, values));
      const m = members?.find((x) => x.name === seg);
      if (!m) return undefined;
      type = this.objectBranch(m.type);
      values = isRecord(values) ? values[seg] : undefined;
    }
    return type;
  }

  /** The object type of `typeName` itself, of its array element, or of its object alternate. */
  objectBranch(typeName: string): string | undefined {
    const t = this.#byName.get(typeName);
    if (!t) return undefined;
    switch (t["meta-type"]) {
      case "object":
        return typeName;
      case "array":
        return t["element-type"] ? this.objectBranch(t["element-type"]) : undefined;
      case "alternate":
        for (const m of t.members ?? []) {
          const b = m.type ? this.objectBranch(m.type) : undefined;
          if (b) return b;
        }
        return undefined;
      default:
        return undefined;
    }
  }

  /**
   * The members of the object reached from type `rootType` through dotted
   * `path` (`[]` for its own members), with union variants chosen from `args`
   * (the values given so far, rooted at `rootType`) when possible.
   */
  membersAt(
    rootType: string,
    path: readonly string[] = [],
    args: Record<string, unknown> = {},
  ): MemberInfo[] | undefined {
    const type = this.resolvePath(rootType, path, args);
    if (!type) return undefined;
    const values = path.reduce<unknown>((v, k) => (isRecord(v) ? v[k] : undefined), args);
    return this.objectMembers(type, tagValueOf(this, type, values));
  }

  /** The type of the member at dotted `path` below `rootType` (the last segment's type). */
  memberTypeAt(
    rootType: string,
    path: readonly string[],
    args: Record<string, unknown> = {},
  ): string | undefined {
    if (path.length === 0) return undefined;
    const members = this.membersAt(rootType, path.slice(0, -1), args);
    return members?.find((m) => m.name === path[path.length - 1])?.type;
  }

  /** The argument type of `command` (a numbered object type), if known. */
  argType(command: string): string | undefined {
    return this.#byName.get(command)?.["arg-type"];
  }

  /** The argument members of `command` at dotted `path`; see {@link SchemaModel.membersAt}. */
  argumentMembers(
    command: string,
    path: readonly string[] = [],
    args: Record<string, unknown> = {},
  ): MemberInfo[] | undefined {
    const argType = this.argType(command);
    return argType ? this.membersAt(argType, path, args) : undefined;
  }

  /**
   * The values a member of type `typeName` can take, for completion: enum
   * values, `true`/`false` for booleans (also inside alternates), else none.
   */
  valueCandidates(typeName: string): string[] {
    const t = this.#byName.get(typeName);
    if (!t) return [];
    if (t["meta-type"] === "enum") return t.values ?? [];
    if (t["meta-type"] === "builtin" && t.name === "bool") return ["true", "false"];
    if (t["meta-type"] === "alternate") {
      return (t.members ?? []).flatMap((m) => (m.type ? this.valueCandidates(m.type) : []));
    }
    return [];
  }

  /** Action types of `transaction` (the cases of its action union). */
  transactionActions(): string[] {
    const actionType = this.#transactionActionType();
    return actionType ? this.unionInfo(actionType)?.cases ?? [] : [];
  }

  /** The type of the `data` of transaction action `action`. */
  transactionDataType(action: string): string | undefined {
    const actionType = this.#transactionActionType();
    const v = actionType ? this.#byName.get(actionType)?.variants : undefined;
    const wrapper = v?.find((x) => x.case === action)?.type;
    if (!wrapper) return undefined;
    const data = this.objectMembers(wrapper)?.find((m) => m.name === "data");
    // Simple unions wrap the action in {data}; flat ones put members directly.
    return data ? this.objectBranch(data.type) : wrapper;
  }

  #transactionActionType(): string | undefined {
    const argType = this.#byName.get("transaction")?.["arg-type"];
    if (!argType) return undefined;
    const actions = this.objectMembers(argType)?.find((m) => m.name === "actions");
    return actions ? this.objectBranch(actions.type) : undefined;
  }

  /**
   * A short type label: builtin names as is (`str`, `int`, `bool`, `number`,
   * `any`, `null`), `enum`, `object`, `array of X`, `X|Y` for alternates.
   */
  typeLabel(typeName: string, depth = 0): string {
    const t = this.#byName.get(typeName);
    if (!t) return BUILTIN_LABEL[typeName] ?? typeName;
    switch (t["meta-type"]) {
      case "builtin":
        return BUILTIN_LABEL[t.name] ?? t["json-type"] ?? t.name;
      case "enum":
        return "enum";
      case "object":
        return "object";
      case "array":
        return depth > 3
          ? "array"
          : `array of ${this.typeLabel(t["element-type"] ?? "", depth + 1)}`;
      case "alternate":
        return depth > 3
          ? "alternate"
          : (t.members ?? []).map((m) => this.typeLabel(m.type ?? "", depth + 1)).join("|");
      default:
        return t["meta-type"];
    }
  }

  /**
   * Help text for `command`: its arguments (dotted names for nested object
   * members, types, optional flags, enum values), union variants, and the
   * return type. `args` may select a union variant (`driver=qcow2`).
   * Returns undefined for an unknown command.
   */
  commandHelp(command: string, args: Record<string, unknown> = {}): string | undefined {
    const cmd = this.#byName.get(command);
    if (!cmd || cmd["meta-type"] !== "command") {
      if (this.#commands.includes(command)) return `${command}\n  (no schema information)`;
      return undefined;
    }
    const lines: string[] = [];
    const flags = [
      ...(cmd["allow-oob"] ? ["allow-oob"] : []),
      ...(cmd.features ?? []),
    ];
    lines.push(command + (flags.length ? `  [${flags.join(", ")}]` : ""));
    const argType = cmd["arg-type"] ?? "";
    const rows: Row[] = [];
    this.#memberRows(argType, "", args, rows, 0);
    if (rows.length === 0) lines.push("  Arguments: none");
    else {
      lines.push("  Arguments:");
      lines.push(...formatRows(rows, "    "));
    }
    const union = this.unionInfo(argType);
    if (union && typeof args[union.tag] !== "string") {
      lines.push(
        ...wrapWords(`Variants by ${union.tag}: ${union.cases.join(", ")}`, 96, "  ", "    "),
        `    (help ${command} ${union.tag}=CASE shows one variant's members)`,
      );
    }
    lines.push(`  Returns: ${this.#returnLabel(cmd["ret-type"] ?? "")}`);
    const retObject = this.objectBranch(cmd["ret-type"] ?? "");
    if (retObject) {
      const retRows: Row[] = [];
      this.#memberRows(retObject, "", {}, retRows, 1);
      lines.push(...formatRows(retRows, "    "));
    }
    return lines.join("\n");
  }

  /** Help text for an event: its data members. */
  eventHelp(event: string): string | undefined {
    const ev = this.#byName.get(event);
    if (!ev || ev["meta-type"] !== "event") return undefined;
    const rows: Row[] = [];
    this.#memberRows(ev["arg-type"] ?? "", "", {}, rows, 1);
    return [
      `${event} (event)`,
      rows.length ? "  Data:" : "  Data: none",
      ...formatRows(rows, "    "),
    ]
      .join("\n");
  }

  #returnLabel(typeName: string): string {
    const t = this.#byName.get(typeName);
    if (t?.["meta-type"] === "object" && (t.members ?? []).length === 0 && !t.tag) {
      return "nothing ({})";
    }
    return this.typeLabel(typeName);
  }

  /** Appends one row per member, recursing into object members up to a depth limit. */
  #memberRows(
    typeName: string,
    prefix: string,
    args: Record<string, unknown>,
    rows: Row[],
    depth: number,
  ): void {
    const objType = this.objectBranch(typeName);
    if (!objType) return;
    const tagValue = tagValueOf(this, objType, args);
    // A union without its tag value shows its common members; the variants are listed apart.
    const members = typeof tagValue === "string" || !this.unionInfo(objType)
      ? this.objectMembers(objType, tagValue) ?? []
      : (this.#byName.get(objType)?.members ?? []).map(toMember);
    for (const m of members) {
      const name = prefix + m.name;
      const values = this.#byName.get(m.type)?.["meta-type"] === "enum"
        ? this.valueCandidates(m.type)
        : [];
      const note = [
        m.optional ? "optional" : "",
        ...m.features,
      ].filter(Boolean).join(", ");
      rows.push({
        name,
        type: this.typeLabel(m.type),
        note: note + (values.length ? `${note ? "; " : ""}${abbreviate(values)}` : ""),
      });
      const child = this.#byName.get(m.type);
      if (
        depth < 2 && child?.["meta-type"] === "object" && !child.tag &&
        (child.members ?? []).length > 0
      ) {
        const sub = isRecord(args[m.name]) ? args[m.name] as Record<string, unknown> : {};
        this.#memberRows(m.type, `${name}.`, sub, rows, depth + 1);
      }
    }
  }

  /** The command list for `help`, in columns fitting `width`. */
  commandList(width = 80): string {
    return columns(this.#commands, width);
  }
}

interface Row {
  name: string;
  type: string;
  note: string;
}

function formatRows(rows: Row[], indent: string): string[] {
  const nameW = Math.min(32, Math.max(...rows.map((r) => r.name.length)));
  const typeW = Math.min(24, Math.max(...rows.map((r) => r.type.length)));
  return rows.map((r) =>
    (indent + r.name.padEnd(nameW) + "  " + r.type.padEnd(typeW) + (r.note ? `  (${r.note})` : ""))
      .trimEnd()
  );
}

/** Wraps text at spaces to `width` columns: first line after `first`, then after `rest`. */
function wrapWords(text: string, width: number, first: string, rest: string): string[] {
  const out: string[] = [];
  let line = first;
  for (const word of text.split(" ")) {
    if (line.trim() !== "" && line.length + 1 + word.length > width) {
      out.push(line);
      line = rest + word;
    } else {
      line += (line.trim() === "" ? "" : " ") + word;
    }
  }
  out.push(line);
  return out;
}

function abbreviate(values: string[], max = 8): string {
  return values.length <= max
    ? values.join("|")
    : `${values.slice(0, max).join("|")}|... (${values.length} values)`;
}

function toMember(m: NonNullable<SchemaEntry["members"]>[number]): MemberInfo {
  return {
    name: m.name ?? "",
    type: m.type ?? "any",
    optional: "default" in m,
    features: m.features ?? [],
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function tagValueOf(model: SchemaModel, type: string, values: unknown): unknown {
  const tag = model.entry(type)?.tag;
  return tag && isRecord(values) ? values[tag] : undefined;
}

/**
 * Lays out words in columns (like `ls`) within `width` characters.
 *
 * @example
 * ```ts
 * columns(["a", "bb", "ccc"], 20); // "a    bb   ccc"
 * ```
 */
export function columns(words: readonly string[], width = 80): string {
  if (words.length === 0) return "";
  const colW = Math.max(...words.map((w) => w.length)) + 2;
  const perRow = Math.max(1, Math.floor((width + 2) / colW));
  const rows = Math.ceil(words.length / perRow);
  const lines: string[] = [];
  for (let r = 0; r < rows; r++) {
    let line = "";
    for (let c = 0; c < perRow; c++) {
      const w = words[c * rows + r];
      if (w !== undefined) line += w.padEnd(colW);
    }
    lines.push(line.trimEnd());
  }
  return lines.join("\n");
}
