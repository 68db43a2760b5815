/**
 * The live QAPI schema (`query-qmp-schema`) and validation of command
 * arguments against it, before they are sent.
 *
 * @module
 */
import { QmpValidationError } from "../errors.ts";
import { editDistance } from "../edit_distance.ts";

// Defined beside the other errors (the command engine raises it without loading this
// module); exported here too, where it has always been.
export { QmpValidationError };

/** One entry of `query-qmp-schema` (QAPI `SchemaInfo`), as QEMU sends it. */
export interface SchemaEntry {
  /** Entity name; non-builtin types are masked as numbers by introspection. */
  name: string;
  /** What the entry describes. */
  "meta-type": "builtin" | "enum" | "array" | "object" | "alternate" | "command" | "event";
  /** Features such as `deprecated` or `unstable`. */
  features?: string[];
  /** For builtins: the JSON type. */
  "json-type"?: string;
  /** For enums: the allowed values. */
  values?: string[];
  /** For arrays: the element type. */
  "element-type"?: string;
  /** For objects and alternates: members (objects: `name`, `type`, `default` when optional). */
  members?: { name?: string; type: string; default?: null; features?: string[] }[];
  /** For objects: the discriminator member of a union. */
  tag?: string;
  /** For objects: the branch type for each tag value. */
  variants?: { case: string; type: string }[];
  /** For commands and events: the argument/data type. */
  "arg-type"?: string;
  /** For commands: the return type. */
  "ret-type"?: string;
  /** For commands: whether `exec-oob` is allowed. */
  "allow-oob"?: boolean;
}

/**
 * An index over `query-qmp-schema`'s result: look up commands and events,
 * and validate arguments the way QEMU would, with messages naming the member.
 */
export class QmpSchema {
  readonly #types = new Map<string, SchemaEntry>();
  readonly #commands = new Map<string, SchemaEntry>();
  readonly #events = new Map<string, SchemaEntry>();

  /** Indexes the entries returned by `query-qmp-schema`. */
  constructor(entries: readonly SchemaEntry[]) {
    for (const e of entries) {
      if (e["meta-type"] === "command") this.#commands.set(e.name, e);
      else if (e["meta-type"] === "event") this.#events.set(e.name, e);
      else this.#types.set(e.name, e);
    }
  }

  /** Names of all commands, sorted. */
  commandNames(): string[] {
    return [...this.#commands.keys()].sort();
  }

  /** Names of all events, sorted. */
  eventNames(): string[] {
    return [...this.#events.keys()].sort();
  }

  /** The schema entry of a command, if the server has it. */
  command(name: string): SchemaEntry | undefined {
    return this.#commands.get(name);
  }

  /** The schema entry of a type by (introspection) name. */
  type(name: string): SchemaEntry | undefined {
    return this.#types.get(name);
  }

  /**
   * Checks `args` for `command`. Returns `undefined` when valid, else a
   * {@link QmpValidationError} naming the first bad member.
   */
  validateArguments(command: string, args: unknown): QmpValidationError | undefined {
    const cmd = this.#commands.get(command);
    if (!cmd) {
      return new QmpValidationError(command, "", "the server has no such command");
    }
    const argType = cmd["arg-type"];
    const value = args ?? {};
    // Commands with the `json-cli` feature (device_add) take properties beyond their schema.
    const open = cmd.features?.includes("json-cli") ?? false;
    const problem = argType ? this.#check(argType, value, "", open) : undefined;
    return problem ? new QmpValidationError(command, problem[0], problem[1]) : undefined;
  }

  /** Returns [path, problem] for the first mismatch, or undefined. */
  #check(
    typeName: string,
    value: unknown,
    path: string,
    open = false,
  ): [string, string] | undefined {
    const t = this.#types.get(typeName);
    if (!t) return undefined; // unknown type: let QEMU judge
    switch (t["meta-type"]) {
      case "builtin":
        return checkJson(t["json-type"] ?? "value", value, path);
      case "enum": {
        const values = t.values ?? t.members?.map((m) => m.name ?? "") ?? [];
        if (typeof value !== "string") return [path, `expected a string, got ${kind(value)}`];
        if (!values.includes(value)) {
          return [path, `${JSON.stringify(value)} is not one of: ${values.join(", ")}`];
        }
        return undefined;
      }
      case "array": {
        if (!Array.isArray(value)) return [path, `expected an array, got ${kind(value)}`];
        for (let i = 0; i < value.length; i++) {
          const p = this.#check(t["element-type"]!, value[i], `${path}[${i}]`);
          if (p) return p;
        }
        return undefined;
      }
      case "alternate": {
        const members = t.members ?? [];
        const results = members.map((m) => this.#check(m.type, value, path));
        if (results.some((r) => r === undefined)) return undefined;
        // When exactly one branch has the value's JSON kind, its detailed problem is the useful one.
        const sameKind = members.filter((m) => this.#describe(m.type) === jsonKind(value));
        if (sameKind.length === 1) return results[members.indexOf(sameKind[0])];
        const names = members.map((m) => this.#describe(m.type)).join(" or ");
        return [path, `expected ${names}, got ${kind(value)}`];
      }
      case "object":
        return this.#checkObject(t, value, path, open);
      default:
        return undefined;
    }
  }

  #checkObject(
    t: SchemaEntry,
    value: unknown,
    path: string,
    open: boolean,
  ): [string, string] | undefined {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return [path, `expected an object, got ${kind(value)}`];
    }
    const obj = value as Record<string, unknown>;
    const members = [...(t.members ?? [])];
    if (t.tag && t.variants) {
      const tagValue = obj[t.tag];
      const variant = t.variants.find((v) => v.case === tagValue);
      const branch = variant ? this.#types.get(variant.type) : undefined;
      if (branch?.members) members.push(...branch.members);
    }
    const known = new Set(members.map((m) => m.name));
    for (const key of open ? [] : Object.keys(obj)) {
      if (!known.has(key)) {
        const suggestion = closest(key, [...known] as string[]);
        return [
          join(path, key),
          `is not a member${suggestion ? ` (did you mean '${suggestion}'?)` : ""}`,
        ];
      }
    }
    for (const m of members) {
      const p = join(path, m.name!);
      if (!(m.name! in obj) || obj[m.name!] === undefined) {
        if (!("default" in m)) return [p, "is missing (required)"];
        continue;
      }
      const problem = this.#check(m.type, obj[m.name!], p);
      if (problem) return problem;
    }
    return undefined;
  }

  #describe(typeName: string): string {
    const t = this.#types.get(typeName);
    if (!t) return typeName;
    if (t["meta-type"] === "builtin") return t["json-type"] ?? typeName;
    return t["meta-type"] === "enum" ? "string" : t["meta-type"];
  }
}

function checkJson(jsonType: string, value: unknown, path: string): [string, string] | undefined {
  const ok = jsonType === "value" ||
    (jsonType === "string" && typeof value === "string") ||
    (jsonType === "int" && (Number.isInteger(value) || typeof value === "bigint")) ||
    (jsonType === "number" && typeof value === "number" && Number.isFinite(value)) ||
    (jsonType === "boolean" && typeof value === "boolean") ||
    (jsonType === "null" && value === null) ||
    (jsonType === "object" && typeof value === "object" && value !== null &&
      !Array.isArray(value)) ||
    (jsonType === "array" && Array.isArray(value));
  if (ok) return undefined;
  const expected = jsonType === "int" ? "an integer" : `${article(jsonType)} ${jsonType}`;
  return [path, `expected ${expected}, got ${kind(value)}`];
}

function jsonKind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "number";
  if (typeof v === "bigint") return "int";
  return typeof v === "object" ? "object" : typeof v === "boolean" ? "boolean" : typeof v;
}

function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number") return Number.isInteger(v) ? `the integer ${v}` : `the number ${v}`;
  if (typeof v === "bigint") return `the integer ${v}`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.slice(0, 40))}`;
  if (typeof v === "boolean") return `${v}`;
  return typeof v === "object" ? "an object" : typeof v;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}
