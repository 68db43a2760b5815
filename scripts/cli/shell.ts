/**
 * `qmp shell ADDRESS`: an interactive QMP shell (qmp-shell syntax, raw JSON,
 * transactions, HMP mode, schema-driven Tab completion and help, persistent
 * history, events shown as they arrive), or a batch runner when stdin is not
 * a terminal.
 *
 * {@link ShellSession} holds the terminal-independent logic (what a line
 * does); the interactive loop and the batch loop drive it.
 *
 * @module
 */
import {
  AbortError,
  ConnectionClosedError,
  type QmpClient,
  QmpCommandError,
  QmpError,
  type QmpEvent,
  redactMessage,
  redactReply,
  redactText,
  TimeoutError,
} from "../../mod.ts";
import { stringifyJson } from "../../lib/json.ts";
import { type ParsedCommand, parseKeyValues, ShellParser, tokenize } from "./args.ts";
import {
  COMMON_HELP,
  durationOption,
  EXIT_FAILURE,
  EXIT_OK,
  hmpText,
  isHmpError,
  parseCommandLine,
  stdoutIsTty,
  takeAddress,
  toJson,
  UsageError,
  withTarget,
  writeErr,
  writeOut,
} from "./common.ts";
import { complete, type CompletionSources, parseHmpHelp, parseHmpInfo } from "./completion.ts";
import { History, LineEditor } from "./line_editor.ts";
import { loadHistoryFile, saveHistoryFile } from "./history_file.ts";
import { columns, type SchemaEntry, SchemaModel } from "./schema_help.ts";
import { eventToJson } from "./events.ts";
import { OversizeLine, readBoundedLines } from "./line_reader.ts";

/** `qmp shell --help`. */
export const SHELL_HELP = `Usage: qmp shell ADDRESS [options]

An interactive QMP shell. Type commands as
  name key=value ...          e.g.  device_add driver=usb-tablet id=tab0
                                    blockdev-add driver=null-co node-name=n0 size=1048576
  {"execute": ..., "arguments": {...}}      raw JSON
  transaction( action k=v, action k=v )     a transaction on one line, or
  transaction(  then one action per line at the TRANS> prompt, then  )
Values are JSON literals when they parse (42, true, null, {"a":1}, [1,2],
"str"), strings otherwise; dotted keys build nested objects (file.filename=x).

Shell commands:
  help                      list QMP commands;  help CMD [tag=value]: arguments, types, return
  help events               list events;         help EVENT: its data
  hmp                       switch to HMP (human monitor) mode; "qmp" switches back
  hmp LINE                  run one HMP command, e.g. hmp info block
  exit                      leave (or Ctrl-D on an empty line)
Keys: Tab completes command names, argument names (a.b.c), enum values; Tab Tab
lists candidates; Up/Down history; Left/Right/Home/End, Ctrl-A/E/K/U/W; Ctrl-C
clears the line (or cancels the running command). Events are printed as they
arrive.

When stdin is not a terminal, lines are read and run in order (batch mode):
results go to stdout (one JSON document per command, compact when piped),
errors to stderr, and the shell stops at the first error with exit status 1
unless --keep-going (then it exits 1 at the end if anything failed).
Blank lines and lines starting with # are skipped. A line may be up to 64 MiB
(QEMU's own limit for one command); a longer one is an error.

Options:
  -H, --hmp                 start in HMP mode
  -N, --skip-negotiation    do not send qmp_capabilities: the monitor stays in capabilities
                            negotiation mode until you type it (to test or debug a QMP
                            server); commands are still sent with ids. For a guest agent
                            (qemu-ga, no greeting) use --agent
  -l, --log FILE            append every command and its reply to FILE as JSON lines,
                            secrets redacted (a new FILE is created with mode 0600)
  --keep-going              batch mode: continue after errors
  --echo                    batch mode: print each command (to stderr) before running it
  --events                  batch mode: also print events to stdout, as JSON lines
  --no-events               interactive mode: do not print events
  --history FILE            history file (default $XDG_STATE_HOME/qmpkit/history, else
                            ~/.qmp_history; 1000 entries)
  --no-history              do not read or save history
  -p, --pretty | --compact  force indented / one-line JSON results
  --timeout D               per-command timeout (default: none; Ctrl-C cancels)
  -v, --verbose             also print each command as the JSON sent (stderr in batch mode)
  --agent                   ADDRESS is a guest agent (qemu-ga) socket: see qmp shell --agent --help
qemu's qmp-shell flags -H, -N, -p, -l and -v mean the same here.

${COMMON_HELP}

Exit status: 0 ok (interactive: also when commands failed; also after "quit");
1 a batch line failed, QEMU went away unexpectedly, or connection failed;
2 usage error.`;

/** What a line did: `"quit"` is a successful QMP `quit` (the connection is closing). */
export type LineStatus = "ok" | "error" | "exit" | "quit";

/** Where a session writes. */
export interface ShellOutput {
  /** A command's result (stdout). */
  result(text: string): void;
  /** An error message (stderr in batch mode). */
  error(text: string): void;
  /** Informational text (mode switches, help). */
  info(text: string): void;
}

/** Options of {@link ShellSession}. */
export interface ShellSessionOptions {
  /** Start in HMP mode. */
  hmp?: boolean;
  /** Indent JSON results (default: compact). */
  pretty?: boolean;
  /** Per-command timeout in ms. */
  timeoutMs?: number;
  /** Receives one log record per command (for `--log`). */
  log?: (record: Record<string, unknown>) => void;
  /** Terminal width for help layout (default 80). */
  width?: () => number;
  /** Receives each QMP command as the JSON sent (`--verbose`, like qmp-shell -v). */
  echo?: (json: string) => void;
  /**
   * Called when a `qmp_capabilities` typed by the user succeeded (`-N`): the
   * schema, unavailable before, is loaded afresh on next use.
   */
  onNegotiated?: () => void;
}

/**
 * The shell's logic, independent of the terminal: parses a line (meta
 * commands, qmp-shell syntax, JSON, transactions, HMP), runs it on the
 * client, and reports through a {@link ShellOutput}.
 */
export class ShellSession {
  /** The current mode. */
  mode: "qmp" | "hmp";
  /** The line parser (holds an open transaction). */
  readonly parser: ShellParser = new ShellParser();
  readonly #client: Pick<QmpClient, "executeRaw">;
  readonly #out: ShellOutput;
  readonly #opts: ShellSessionOptions;
  #schema: SchemaModel | undefined;
  #schemaLoading: Promise<SchemaModel | undefined> | undefined;
  #schemaProblem: string | undefined;
  #hmpCommands: string[] | undefined;
  #hmpInfo: string[] | undefined;

  /** Creates a session on a connected client. */
  constructor(
    client: Pick<QmpClient, "executeRaw">,
    out: ShellOutput,
    options: ShellSessionOptions = {},
  ) {
    this.#client = client;
    this.#out = out;
    this.#opts = options;
    this.mode = options.hmp ? "hmp" : "qmp";
  }

  /** The prompt for the current state: `(QEMU) `, `(HMP) ` or `TRANS> `. */
  prompt(): string {
    if (this.parser.inTransaction) return "TRANS> ";
    return this.mode === "hmp" ? "(HMP) " : "(QEMU) ";
  }

  /** What completion can use right now (the schema once loaded, HMP names once loaded). */
  get completionSources(): CompletionSources {
    return { schema: this.#schema, hmpCommands: this.#hmpCommands, hmpInfo: this.#hmpInfo };
  }

  /** The schema model, if loaded. */
  get schema(): SchemaModel | undefined {
    return this.#schema;
  }

  /**
   * Why there is no schema, once loading failed (`query-qmp-schema` answered
   * something that is not a schema, or did not answer in time): completion
   * and help work without it, and the interactive shell says so in one line.
   */
  get schemaProblem(): string | undefined {
    return this.#schemaProblem;
  }

  /**
   * Loads the schema (`query-qmp-schema`, falling back to `query-commands`
   * names). A reply that is not a list of schema entries, or no reply within
   * {@link SCHEMA_TIMEOUT_MS}, leaves the schema unset and explains why in
   * {@link ShellSession.schemaProblem} (a later call tries again after a
   * timeout). Only connection loss rejects.
   */
  loadSchema(): Promise<SchemaModel | undefined> {
    this.#schemaLoading ??= (async () => {
      try {
        const entries = await this.#client.executeRaw("query-qmp-schema", undefined, {
          timeout: SCHEMA_TIMEOUT_MS,
        });
        if (!Array.isArray(entries)) {
          this.#schemaProblem = `query-qmp-schema returned ${kindOf(entries)}, not a list`;
        } else {
          this.#schema = SchemaModel.fromSchema(entries.filter(isSchemaEntry));
          this.#schemaProblem = undefined;
          return this.#schema;
        }
      } catch (err) {
        if (err instanceof TimeoutError) {
          this.#schemaProblem = `QEMU did not answer query-qmp-schema within ${
            SCHEMA_TIMEOUT_MS / 1000
          }s`;
          this.#schemaLoading = undefined; // "help" asks again
          return undefined;
        }
        if (!(err instanceof QmpCommandError)) throw err;
        this.#schemaProblem = `query-qmp-schema failed: ${err.desc}`;
      }
      try {
        const cmds = await this.#client.executeRaw("query-commands", undefined, {
          timeout: SCHEMA_TIMEOUT_MS,
        });
        if (Array.isArray(cmds)) {
          const names = cmds.map((c) => (c as { name?: unknown })?.name).filter((n) =>
            typeof n === "string"
          ) as string[];
          if (names.length > 0) this.#schema = SchemaModel.fromCommandNames(names);
        }
      } catch (e) {
        if (!(e instanceof QmpCommandError) && !(e instanceof TimeoutError)) throw e;
      }
      return this.#schema;
    })();
    return this.#schemaLoading;
  }

  /** Loads HMP command and `info` names for completion (once). */
  async loadHmpNames(): Promise<void> {
    if (this.#hmpCommands) return;
    try {
      const help = hmpText(
        await this.#client.executeRaw("human-monitor-command", { "command-line": "help" }),
      );
      const info = hmpText(
        await this.#client.executeRaw("human-monitor-command", { "command-line": "info" }),
      );
      this.#hmpCommands = parseHmpHelp(help);
      this.#hmpInfo = parseHmpInfo(info);
    } catch (err) {
      if (!(err instanceof QmpCommandError)) throw err;
      this.#hmpCommands = [];
      this.#hmpInfo = [];
    }
  }

  /**
   * Runs one input line. `signal` cancels a running command. Input errors
   * (an unclosed quote or bracket, bad JSON, a bad key=value) are reported
   * through the output as errors, never thrown.
   */
  async run(line: string, signal?: AbortSignal): Promise<LineStatus> {
    try {
      return await this.#run(line, signal);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      this.#out.error(`Error: ${err.message}`);
      return "error";
    }
  }

  async #run(line: string, signal?: AbortSignal): Promise<LineStatus> {
    const trimmed = line.trim();
    if (!this.parser.inTransaction) {
      if (trimmed === "" || trimmed.startsWith("#")) return "ok";
      if (this.mode === "hmp") {
        if (trimmed === "qmp") {
          this.mode = "qmp";
          this.#out.info("QMP mode");
          return "ok";
        }
        if (trimmed === "exit") return "exit";
        return await this.#hmp(trimmed, signal);
      }
      const words = tokenize(trimmed).map((t) => t.text);
      switch (words[0]) {
        case "exit":
          if (words.length === 1) return "exit";
          break;
        case "help":
        case "?":
          return await this.#help(words.slice(1), signal);
        case "hmp":
          if (words.length === 1) {
            this.mode = "hmp";
            await this.loadHmpNames();
            this.#out.info('HMP mode: lines are human monitor commands; "qmp" switches back');
            return "ok";
          }
          return await this.#hmp(trimmed.slice(3).trim(), signal);
      }
    }
    let command: ParsedCommand;
    try {
      const parsed = this.parser.feed(line);
      if (parsed.kind !== "command") return "ok";
      command = parsed.command;
    } catch (err) {
      if (err instanceof UsageError) {
        this.#out.error(`Error: ${err.message}`);
        return "error";
      }
      throw err;
    }
    return await this.#execute(command, signal);
  }

  async #execute(cmd: ParsedCommand, signal?: AbortSignal): Promise<LineStatus> {
    const record: Record<string, unknown> = {
      time: new Date().toISOString(),
      execute: cmd.execute,
      ...(cmd.arguments ? { arguments: cmd.arguments } : {}),
    };
    this.#opts.echo?.(stringifyJson(redactMessage(cmd)));
    let value: unknown;
    try {
      value = await this.#client.executeRaw(cmd.execute, cmd.arguments, {
        timeout: this.#opts.timeoutMs,
        signal,
      });
    } catch (err) {
      return this.#failed(err, record);
    }
    this.#opts.log?.({ ...record, return: value });
    if (cmd.execute === "qmp_capabilities") {
      // Typed by the user after -N: commands (and the schema) are available now.
      this.#schema = undefined;
      this.#schemaLoading = undefined;
      this.#schemaProblem = undefined;
      this.#opts.onNegotiated?.();
    }
    // Outside the try: a closed stdout (| head) is not a failure of the command.
    this.#out.result(toJson(value, this.#opts.pretty ?? false));
    return cmd.execute === "quit" ? "quit" : "ok";
  }

  async #hmp(line: string, signal?: AbortSignal): Promise<LineStatus> {
    const args = { "command-line": line };
    const record = {
      time: new Date().toISOString(),
      execute: "human-monitor-command",
      arguments: args,
    };
    this.#opts.echo?.(stringifyJson(redactMessage({ execute: record.execute, arguments: args })));
    try {
      const out = hmpText(
        await this.#client.executeRaw("human-monitor-command", args, {
          timeout: this.#opts.timeoutMs,
          signal,
        }),
      );
      this.#opts.log?.({ ...record, return: out });
      if (isHmpError(out)) {
        this.#out.error(out.trimEnd());
        return "error";
      }
      if (out !== "") this.#out.result(out.replace(/\n$/, ""));
      return "ok";
    } catch (err) {
      return this.#failed(err, record);
    }
  }

  #failed(err: unknown, record: Record<string, unknown>): LineStatus {
    if (err instanceof QmpCommandError) {
      this.#opts.log?.({ ...record, error: { class: err.class, desc: err.desc } });
      this.#out.error(`Error: ${err.desc} (${err.class})`);
      return "error";
    }
    if (err instanceof AbortError) {
      this.#opts.log?.({ ...record, error: { class: "Interrupted", desc: err.message } });
      this.#out.error("Interrupted (the command may still complete in QEMU)");
      return "error";
    }
    if (err instanceof ConnectionClosedError || err instanceof Error) {
      this.#opts.log?.({ ...record, error: { class: err.name, desc: err.message } });
      this.#out.error(`Error: ${err.message}`);
      return "error";
    }
    throw err;
  }

  async #help(words: string[], signal?: AbortSignal): Promise<LineStatus> {
    // The schema may still be on its way: Ctrl-C stops waiting for it.
    let stop: (() => void) | undefined;
    const aborted = new Promise<"aborted">((resolve) => {
      stop = () => resolve("aborted");
      if (signal?.aborted) stop();
      else signal?.addEventListener("abort", stop, { once: true });
    });
    const schema = await Promise.race([this.loadSchema(), aborted]).finally(() => {
      if (stop) signal?.removeEventListener("abort", stop);
    });
    if (schema === "aborted") {
      this.#out.error("Interrupted (still waiting for the schema: query-qmp-schema)");
      return "error";
    }
    const width = this.#opts.width?.() ?? 80;
    if (!schema) {
      this.#out.error(
        `Error: this QEMU offers no command list (${
          this.#schemaProblem ?? "query-qmp-schema failed"
        })`,
      );
      return "error";
    }
    if (words.length === 0) {
      this.#out.info(
        `${schema.commands().length} commands (help CMD for one; help events for events):\n` +
          columns(schema.commands(), width - 1) +
          `\nShell: help [CMD|EVENT|events], hmp [LINE], qmp, exit, transaction( ... )`,
      );
      return "ok";
    }
    const [name, ...rest] = words;
    if (name === "events") {
      this.#out.info(`${schema.events().length} events:\n${columns(schema.events(), width - 1)}`);
      return "ok";
    }
    let args: Record<string, unknown> = {};
    try {
      args = parseKeyValues(rest);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      this.#out.error(`Error: ${err.message}`);
      return "error";
    }
    const text = schema.commandHelp(name, args) ?? schema.eventHelp(name);
    if (!text) {
      const near = schema.commands().filter((c) => c.includes(name)).slice(0, 8);
      this.#out.error(
        `Error: unknown command or event "${name}"` +
          (near.length ? ` (similar: ${near.join(", ")})` : ""),
      );
      return "error";
    }
    this.#out.info(text);
    return "ok";
  }
}

/** How long the shell waits for `query-qmp-schema` before going on without it. */
export const SCHEMA_TIMEOUT_MS = 10_000;

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

function isSchemaEntry(v: unknown): v is SchemaEntry {
  return typeof v === "object" && v !== null && !Array.isArray(v) &&
    typeof (v as { name?: unknown }).name === "string" &&
    typeof (v as { "meta-type"?: unknown })["meta-type"] === "string";
}

/** One line describing an event for the interactive shell: `[12:00:01.123] STOP {...}`. */
export function formatEventLine(ev: QmpEvent): string {
  const t = ev.time;
  const stamp = t
    ? `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${
      String(t.getMilliseconds()).padStart(3, "0")
    }`
    : "--:--:--";
  return `[${stamp}] event ${ev.event}${ev.data === undefined ? "" : " " + stringifyJson(ev.data)}`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/** The default history file: `$XDG_STATE_HOME/qmpkit/history`, else `~/.qmp_history`. */
export function defaultHistoryPath(env: (name: string) => string | undefined): string | undefined {
  const xdg = env("XDG_STATE_HOME");
  if (xdg) return `${xdg}/qmpkit/history`;
  const home = env("HOME");
  return home ? `${home}/.qmp_history` : undefined;
}

function stdinIsTty(): boolean {
  try {
    return Deno.stdin.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Opens the `--log` file for appending: a new file is created exclusively with
 * mode 0600; an existing one must be a regular file (not a symlink), and is
 * made 0600 if others could read it.
 */
async function openLogFile(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { append: true, createNew: true, mode: 0o600 });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  const info = await Deno.lstat(path);
  if (!info.isFile) {
    throw new UsageError(
      `--log ${path}: not a regular file (${
        info.isSymlink ? "a symbolic link" : "a special file"
      }); ` +
        `give the path of a new or existing regular file`,
    );
  }
  const file = await Deno.open(path, { append: true });
  if (info.mode !== null && (info.mode & 0o077) !== 0) await Deno.chmod(path, 0o600);
  return file;
}

/** A `--log` record with its secrets redacted: the request, the reply and any error text. */
export function redactLogRecord(record: Record<string, unknown>): Record<string, unknown> {
  const out = redactReply(record, record.execute as string, record.arguments);
  const error = out.error as { class?: unknown; desc?: unknown } | undefined;
  if (error && typeof error.desc === "string") {
    return { ...out, error: { ...error, desc: redactText(error.desc) } };
  }
  return out;
}

/** Runs `qmp shell` with `argv` (after the subcommand name); returns the exit code. */
export async function shellCommand(argv: string[]): Promise<number> {
  if (argv.includes("--agent")) {
    const { agentShellCommand } = await import("./agent_shell.ts");
    return await agentShellCommand(argv.filter((a) => a !== "--agent"));
  }
  const { values, positionals } = parseCommandLine(argv, {
    hmp: { type: "boolean", short: "H" },
    "skip-negotiation": { type: "boolean", short: "N" },
    log: { type: "string", short: "l" },
    "keep-going": { type: "boolean" },
    echo: { type: "boolean" },
    events: { type: "boolean" },
    "no-events": { type: "boolean" },
    history: { type: "string" },
    "no-history": { type: "boolean" },
    pretty: { type: "boolean", short: "p" },
    compact: { type: "boolean" },
    timeout: { type: "string" },
  });
  if (values.help) {
    writeOut(SHELL_HELP + "\n");
    return EXIT_OK;
  }
  const address = takeAddress(values, positionals);
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const timeoutMs = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout as string);
  let logFile: Deno.FsFile | undefined;
  if (values.log !== undefined) logFile = await openLogFile(values.log as string);
  const encoder = new TextEncoder();
  const log = logFile
    ? (record: Record<string, unknown>) => {
      try {
        const safe = redactLogRecord(record);
        logFile!.writeSync(encoder.encode(stringifyJson(safe) + "\n"));
      } catch { /* keep going */ }
    }
    : undefined;
  const interactive = stdinIsTty() && stdoutIsTty();
  const skipNegotiation = Boolean(values["skip-negotiation"]);
  try {
    return await withTarget(
      address,
      values,
      skipNegotiation ? { negotiate: false } : {},
      async ({ client, address: target }) => {
        const pretty = values.pretty ? true : values.compact ? false : undefined;
        if (interactive) {
          return await interactiveLoop(client, {
            address: target,
            hmp: Boolean(values.hmp),
            pretty: pretty ?? true,
            timeoutMs,
            log,
            showEvents: !values["no-events"],
            verbose: Boolean(values.verbose),
            skipNegotiation,
            historyPath: values["no-history"]
              ? undefined
              : (values.history as string | undefined) ??
                defaultHistoryPath((n) => Deno.env.get(n)),
          });
        }
        return await batchLoop(client, {
          hmp: Boolean(values.hmp),
          pretty: pretty ?? stdoutIsTty(),
          timeoutMs,
          log,
          keepGoing: Boolean(values["keep-going"]),
          echo: Boolean(values.echo),
          showEvents: Boolean(values.events),
          verbose: Boolean(values.verbose),
        });
      },
    );
  } catch (err) {
    if (skipNegotiation && err instanceof TimeoutError && /greeting/i.test(err.message)) {
      throw new QmpError(
        `${
          err.message.split("\n")[0]
        } (a guest agent, qemu-ga, sends none: use qmp shell --agent -N)`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    logFile?.close();
  }
}

interface LoopOptions {
  hmp: boolean;
  pretty: boolean;
  timeoutMs?: number;
  log?: (record: Record<string, unknown>) => void;
  showEvents: boolean;
  verbose?: boolean;
  /** `-N`: capabilities are not negotiated; the schema waits for the user's qmp_capabilities. */
  skipNegotiation?: boolean;
}

/** Batch mode: runs stdin's lines in order. */
async function batchLoop(
  client: QmpClient,
  opts: LoopOptions & { keepGoing: boolean; echo: boolean },
): Promise<number> {
  let lineNo = 0;
  const out: ShellOutput = {
    result: (t) => writeOut(t + "\n"),
    error: (t) => writeErr(`qmp shell: line ${lineNo}: ${t.replace(/^Error: /, "error: ")}\n`),
    info: (t) => writeOut(t + "\n"),
  };
  const session = new ShellSession(client, out, {
    ...opts,
    echo: opts.verbose ? (json) => writeErr(`${json}\n`) : undefined,
  });
  const events = opts.showEvents
    ? pumpEvents(client, (ev) => writeOut(stringifyJson(eventToJson(ev)) + "\n"))
    : undefined;
  let failures = 0;
  try {
    for await (const line of readBoundedLines(Deno.stdin.readable)) {
      lineNo++;
      if (line instanceof OversizeLine) {
        session.parser.failLine(); // inside a transaction: the rest of it is not run
        out.error(`Error: ${line.message}`);
        failures++;
        if (!opts.keepGoing) return EXIT_FAILURE;
        continue;
      }
      if (opts.echo && line.trim() !== "" && !line.trim().startsWith("#")) {
        writeErr(`${session.prompt()}${redactText(line)}\n`);
      }
      let status: LineStatus;
      try {
        status = await session.run(line);
      } catch (err) {
        if (client.closeError) throw err;
        out.error(`Error: ${err instanceof Error ? err.message : String(err)}`);
        status = "error";
      }
      if (status === "exit") break;
      if (status === "quit") {
        await waitClosed(client);
        break;
      }
      if (status === "error") {
        failures++;
        if (!opts.keepGoing) return EXIT_FAILURE;
      }
      if (client.state === "closed") break;
    }
    if (session.parser.inTransaction) {
      writeErr(`qmp shell: error: input ended inside transaction( ... ): nothing was run\n`);
      return EXIT_FAILURE;
    }
    return failures > 0 ? EXIT_FAILURE : EXIT_OK;
  } finally {
    events?.stop();
  }
}

/** Waits (up to 5 s) for the connection to close after `quit`. */
async function waitClosed(client: QmpClient): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([client.closed, new Promise((r) => (timer = setTimeout(r, 5000)))]);
  clearTimeout(timer);
}

/** Subscribes to all events and hands each to `sink` until stopped or the connection closes. */
function pumpEvents(client: QmpClient, sink: (ev: QmpEvent) => void): { stop(): void } {
  const listener = client.events({ bufferSize: 10_000, overflow: "drop-oldest" });
  (async () => {
    try {
      for await (const ev of listener) sink(ev);
    } catch { /* connection closed: the loops report it */ }
  })();
  return { stop: () => listener.close() };
}

/**
 * Splits a byte stream into lines (without line ends), in linear time; a line
 * over 64 MiB (`MAX_LINE_BYTES`, line_reader.ts) throws {@link UsageError}.
 */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  for await (const line of readBoundedLines(stream)) {
    if (line instanceof OversizeLine) throw new UsageError(line.message);
    yield line;
  }
}

/** The interactive REPL on a raw-mode terminal. */
async function interactiveLoop(
  client: QmpClient,
  opts: LoopOptions & { historyPath?: string; address: string },
): Promise<number> {
  const loaded = opts.historyPath ? await loadHistoryFile(opts.historyPath) : undefined;
  const history = loaded?.history ?? new History();
  const historyPath = loaded?.save ? opts.historyPath : undefined;
  let historyWarning = loaded?.warning;
  const width = () => {
    try {
      return Deno.consoleSize().columns;
    } catch {
      return 80;
    }
  };
  const color = !Deno.env.get("NO_COLOR");
  let current: AbortController | undefined;
  let sourcesReady = false;
  let tabPendingOn: string | undefined;
  // deno-lint-ignore prefer-const
  let session: ShellSession;
  const editor = new LineEditor({
    write: writeOut,
    columns: width,
    history,
    complete: (line, cursor) => {
      const c = complete(
        { line, cursor, mode: session.mode, inTransaction: session.parser.inTransaction },
        session.completionSources,
      );
      // Tab before the schema arrived: press it again for the user once it has.
      if (!sourcesReady && c.candidates.length === 0) tabPendingOn = line;
      return c;
    },
    onInterrupt: () => current?.abort(),
  });
  const out: ShellOutput = {
    result: (t) => editor.print(t),
    error: (t) => editor.print(color ? `\x1b[31m${t}\x1b[0m` : t),
    info: (t) => editor.print(t),
  };
  session = new ShellSession(client, out, {
    ...opts,
    width,
    echo: opts.verbose ? (json) => out.info(json) : undefined,
    onNegotiated: () => {
      // -N: the schema can be read now; a Tab pressed meanwhile is replayed once it is.
      sourcesReady = false;
      session.loadSchema().catch(() => {}).finally(sourcesArrived);
    },
  });
  const sourcesArrived = () => {
    sourcesReady = true;
    // The line is still the one Tab was pressed on: complete it now.
    if (tabPendingOn !== undefined && editor.active && editor.text === tabPendingOn) {
      editor.feed("\t");
    }
    tabPendingOn = undefined;
  };

  if (historyWarning) editor.print(`qmp shell: warning: ${historyWarning}`);
  const v = client.greeting.version.qemu;
  editor.print(
    `Connected to QEMU ${v.major}.${v.minor}.${v.micro} at ${opts.address}.` +
      (opts.skipNegotiation
        ? `\nCapabilities not negotiated (-N): QEMU accepts only qmp_capabilities until you ` +
          `run it;\nTab completion and help come after that. Ctrl-D exits.`
        : `\nTab completes; "help" lists commands, "help CMD" describes one; Ctrl-D exits.`),
  );
  // The prompt comes at once; completion data arrives when the monitor answers.
  Promise.allSettled([
    opts.skipNegotiation ? undefined : session.loadSchema().then((schema) => {
      if (!schema && session.schemaProblem) {
        editor.print(`qmp shell: note: no Tab completion: ${session.schemaProblem}`);
      }
    }),
    opts.hmp ? session.loadHmpNames() : undefined,
  ]).then(() => {
    sourcesArrived();
  });

  Deno.stdin.setRaw(true);
  const input = (async () => {
    const buf = new Uint8Array(4096);
    while (true) {
      let n: number | null;
      try {
        n = await Deno.stdin.read(buf);
      } catch {
        n = null;
      }
      if (n === null) {
        editor.end();
        return;
      }
      editor.feed(buf.slice(0, n));
    }
  })();
  input.catch(() => {});
  const events = opts.showEvents
    ? pumpEvents(client, (ev) => editor.print(formatEventLine(ev)))
    : undefined;
  client.closed.then(() => editor.cancel());

  try {
    while (client.state !== "closed") {
      const r = await editor.readLine(session.prompt());
      if (r.kind === "eof") break;
      if (r.kind === "interrupt") {
        if (session.parser.inTransaction) {
          session.parser.reset();
          out.info("Transaction abandoned");
        }
        continue;
      }
      if (history.add(r.line.trimEnd()) && historyPath) {
        const problem = saveHistoryFile(historyPath, history.entries);
        if (problem && !historyWarning) out.info(`qmp shell: warning: ${historyWarning = problem}`);
      }
      current = new AbortController();
      let status: LineStatus;
      try {
        status = await session.run(r.line, current.signal);
      } catch (err) {
        // Whatever went wrong with this line, the shell stays.
        if (client.closeError) break;
        out.error(`Error: ${err instanceof Error ? err.message : String(err)}`);
        status = "error";
      } finally {
        current = undefined;
      }
      if (status === "exit") break;
      if (status === "quit") await waitClosed(client);
    }
  } finally {
    events?.stop();
    try {
      Deno.stdin.setRaw(false);
    } catch { /* not a terminal any more */ }
  }
  const closed = client.closeError;
  if (closed && closed.reason !== "client" && closed.reason !== "quit") {
    writeErr(`qmp shell: error: ${closed.message}\n`);
    return EXIT_FAILURE;
  }
  if (closed?.reason === "quit") writeOut("QEMU quit.\n");
  return EXIT_OK;
}
