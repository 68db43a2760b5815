/**
 * A strict command-line parser with the semantics (and error codes) of
 * `node:util`'s `parseArgs` for what the `qmp` subcommands use: boolean and
 * string options, long (`--name`, `--name=value`) and short (`-v`, `-vh`,
 * `-n NAME`, `-nNAME`), `multiple`, `default`, positionals, and `--`.
 * Importing `node:util` initialises Deno's Node compatibility layer, which
 * cost `qmp exec` ~15 ms of its start-up; this module costs nothing.
 *
 * @module
 */

/** One option: its type, a one-letter alias, whether it repeats, a default. */
export interface OptionSpec {
  /** `"boolean"` (a flag) or `"string"` (takes a value). */
  type: "boolean" | "string";
  /** A one-letter alias (`-v`). */
  short?: string;
  /** Collect every occurrence into an array. */
  multiple?: boolean;
  /** The value when the option is not given. */
  default?: string | boolean | string[] | boolean[];
}

/** The options of a command, by long name. */
export type OptionSpecs = Record<string, OptionSpec>;

/** A user input error (bad `key=value`, bad JSON, bad syntax): exit code 2 in `qmp exec`. */
export class UsageError extends Error {
  /** Creates a usage error with a message meant for the user. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** An error like those of `node:util` `parseArgs` (same `code`s, the offending flag quoted). */
export class ParseArgsError extends TypeError {
  /** `ERR_PARSE_ARGS_UNKNOWN_OPTION` or `ERR_PARSE_ARGS_INVALID_OPTION_VALUE`. */
  readonly code: string;
  /** `code` and a message quoting the flag. */
  constructor(code: string, message: string) {
    super(message);
    this.name = "TypeError";
    this.code = code;
  }
}

/**
 * Parses `args` strictly: an unknown option, a value given to a flag, or a
 * string option without one throws {@link ParseArgsError}.
 */
export function parseArgs(
  config: { args: string[]; options: OptionSpecs },
): { values: Record<string, unknown>; positionals: string[] } {
  const { args, options } = config;
  const values: Record<string, unknown> = Object.create(null);
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.short !== undefined) byShort.set(spec.short, name);
  }
  const store = (name: string, value: string | boolean) => {
    if (options[name].multiple) {
      const list = (values[name] ??= []) as unknown[];
      list.push(value);
    } else {
      values[name] = value;
    }
  };
  const unknown = (flag: string) =>
    new ParseArgsError(
      "ERR_PARSE_ARGS_UNKNOWN_OPTION",
      `Unknown option '${flag}'. To specify a positional argument starting with a '-', ` +
        `place it at the end of the command after '--', as in '-- "${flag}"`,
    );
  /** The value of string option `flag` from the next argument. */
  const next = (i: number, flag: string): string => {
    const value = args[i + 1];
    if (value === undefined) {
      throw new ParseArgsError(
        "ERR_PARSE_ARGS_INVALID_OPTION_VALUE",
        `Option '${flag} <value>' argument missing`,
      );
    }
    if (value.startsWith("-")) {
      throw new ParseArgsError(
        "ERR_PARSE_ARGS_INVALID_OPTION_VALUE",
        `Option '${flag}' argument is ambiguous.\nDid you forget to specify the option ` +
          `argument for '${flag}'?\nTo specify an option argument starting with a dash use ` +
          `'${flag}=-XYZ'.`,
      );
    }
    return value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = Object.hasOwn(options, name) ? options[name] : undefined;
      if (spec === undefined) throw unknown(eq < 0 ? arg : arg.slice(0, eq));
      if (spec.type === "boolean") {
        if (eq >= 0) {
          throw new ParseArgsError(
            "ERR_PARSE_ARGS_INVALID_OPTION_VALUE",
            `Option '--${name}' does not take an argument`,
          );
        }
        store(name, true);
      } else if (eq >= 0) {
        store(name, arg.slice(eq + 1));
      } else {
        store(name, next(i, arg));
        i++;
      }
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") {
      // -v, -vh (flags grouped), -n NAME, -nNAME
      for (let k = 1; k < arg.length; k++) {
        const letter = arg[k];
        const name = byShort.get(letter);
        if (name === undefined) throw unknown(`-${letter}`);
        if (options[name].type === "boolean") {
          store(name, true);
          continue;
        }
        if (k + 1 < arg.length) {
          store(name, arg.slice(k + 1));
        } else {
          store(name, next(i, `-${letter}`));
          i++;
        }
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  for (const [name, spec] of Object.entries(options)) {
    if (spec.default !== undefined && !(name in values)) values[name] = spec.default;
  }
  return { values, positionals };
}
