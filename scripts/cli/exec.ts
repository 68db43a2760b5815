/**
 * `qmp exec ADDRESS COMMAND [key=value ...]`: runs one command and prints
 * its return value as JSON.
 *
 * @module
 */
import { QmpError } from "../../lib/errors.ts";
import type { TranscriptEntry } from "../../lib/client.ts";
import {
  COMMON_HELP,
  durationOption,
  EXIT_FAILURE,
  EXIT_OK,
  formatError,
  hmpText,
  isCommandError,
  isHmpError,
  parseCommandLine,
  takeAddress,
  toJson,
  UsageError,
  withTarget,
  writeErr,
  writeOut,
} from "./common.ts";

/** `qmp exec --help`. */
export const EXEC_HELP = `Usage: qmp exec ADDRESS COMMAND [key=value ...] [options]
       qmp exec ADDRESS --hmp "HMP COMMAND LINE" [options]

Runs one QMP command and prints its return value as JSON: indented on a
terminal, one compact line when piped (for jq).

Arguments are key=value, as in qmp-shell:
  - values are JSON literals when they parse: 42, -1.5, true, false, null,
    {"a": 1}, [1, 2], "a JSON string"; 'single quoted' is a literal string;
    anything else is a string (driver=usb-tablet)
  - dotted keys build nested objects: file.driver=file file.filename=/tmp/x.img
  - a key given twice, or used both as a value and an object, is an error

Options:
  --args JSON               arguments as one JSON object (key=value items are added to it)
  --hmp "LINE"              run a human monitor (HMP) command and print its text output;
                            exits 1 when the output is an error ("Error: ...", "unknown
                            command", "invalid CPU index", a usage error, ...)
  --raw                     print the whole reply message ({"return": ...} or {"error": ...})
  -p, --pretty | --compact  force indented / one-line JSON
  --timeout D               give up waiting for the reply after D (e.g. 10s)

${COMMON_HELP}

Exit status: 0 success; 1 QMP error (unknown command: CommandNotFound, bad
argument: GenericError, ...), connection or launch failure, timeout;
2 usage error (bad option, bad address syntax, bad key=value).

Examples:
  qmp exec unix:/tmp/vm.sock query-status
  qmp exec /tmp/vm.sock device_add driver=usb-tablet id=tab0
  qmp exec /tmp/vm.sock blockdev-add driver=null-co node-name=n0 size=1048576
  qmp exec /tmp/vm.sock --hmp "info block"
  qmp exec --launch query-version | jq .qemu`;

/** Runs `qmp exec` with `argv` (after the subcommand name); returns the exit code. */
export async function execCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, {
    args: { type: "string" },
    hmp: { type: "string" },
    raw: { type: "boolean" },
    pretty: { type: "boolean", short: "p" },
    compact: { type: "boolean" },
    timeout: { type: "string" },
  });
  if (values.help) {
    writeOut(EXEC_HELP + "\n");
    return EXIT_OK;
  }
  const address = takeAddress(values, positionals, { takesCommand: true });
  const hmp = values.hmp as string | undefined;
  let command: string;
  let args: Record<string, unknown> | undefined;
  if (hmp !== undefined) {
    if (positionals.length > 0 || values.args !== undefined) {
      throw new UsageError(`--hmp takes the whole command line; no COMMAND or arguments`);
    }
    command = "human-monitor-command";
    args = { "command-line": hmp };
  } else {
    const name = positionals.shift();
    if (name === undefined) throw new UsageError("Missing COMMAND (e.g. query-status)");
    if (name.includes("=")) {
      throw new UsageError(`Expected a COMMAND name before key=value arguments, got "${name}"`);
    }
    command = name;
    if (positionals.length > 0 || values.args !== undefined) {
      // The key=value and JSON parsers are imported only when there are arguments (not a
      // literal specifier: Deno would read the module at start-up; see scripts/qmp.ts).
      const { parseArgsJson, parseKeyValues }: typeof import("./args.ts") = await import(
        new URL("./args.ts", import.meta.url).href
      );
      const base = values.args !== undefined ? parseArgsJson(values.args as string) : {};
      args = parseKeyValues(positionals, base);
      if (Object.keys(args).length === 0) args = undefined;
    }
  }
  const pretty = values.pretty ? true : values.compact ? false : undefined;
  const timeout = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout as string);

  // The raw reply, for --raw: the received message with the id we sent. Only --raw
  // records a transcript: it redacts every message (~0.7 ms of a one-shot run).
  let sentId: unknown;
  let reply: Record<string, unknown> | undefined;
  const transcript = (e: TranscriptEntry) => {
    const m = e.message;
    if (e.direction === "send" && m.execute === command) sentId = m.id;
    else if (e.direction === "recv" && sentId !== undefined && m.id === sentId) reply = m;
  };

  return await withTarget(address, values, values.raw ? { transcript } : {}, async ({ client }) => {
    let value: unknown;
    try {
      value = await client.executeRaw(command, args, {
        timeout,
      });
    } catch (err) {
      if (values.raw && reply && isCommandError(err)) writeOut(toJson(reply, pretty) + "\n");
      throw err;
    }
    const hmpFailed = hmp !== undefined && isHmpError(hmpText(value));
    if (values.raw) {
      writeOut(toJson(reply ?? { return: value }, pretty) + "\n");
      if (hmpFailed) return EXIT_FAILURE; // HMP reports errors as text in a successful reply
    } else if (hmp !== undefined) {
      const text = hmpText(value);
      if (hmpFailed) {
        const [first, ...rest] = text.trimEnd().split("\n");
        writeErr(formatError("qmp exec", new QmpError(`HMP: ${first}`)) + "\n");
        if (rest.length) writeErr(rest.join("\n") + "\n");
        return EXIT_FAILURE;
      }
      writeOut(text);
    } else {
      writeOut(toJson(value, pretty) + "\n");
    }
    return EXIT_OK;
  });
}
