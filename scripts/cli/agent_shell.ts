/**
 * `qmp shell --agent ADDRESS`: a minimal shell for the guest agent (qemu-ga). Lines are
 * `guest-command key=value ...` (or `exec PROGRAM ARGS...`); Tab completes the commands the
 * agent reports as enabled in `guest-info` and their argument names from the generated schema.
 * When stdin is not a terminal, lines are run in order (batch mode).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { AGENT_COMMAND_ARGUMENTS } from "../../lib/qapi/agent_types.ts";
import { type AgentClient, connectAgent } from "../../mod.ts";
import { parseKeyValues, shellSplit } from "./args.ts";
import {
  durationOption,
  EXIT_FAILURE,
  EXIT_OK,
  formatError,
  stdoutIsTty,
  toJson,
  UsageError,
  writeErr,
  writeOut,
} from "./common.ts";
import type { Completion } from "./completion.ts";
import { History, LineEditor } from "./line_editor.ts";
import { readLines } from "./shell.ts";

/** `qmp shell --agent --help`. */
export const AGENT_SHELL_HELP = `Usage: qmp shell --agent ADDRESS [options]

A shell for the guest agent (qemu-ga) at ADDRESS (its chardev socket). Type
  guest-command key=value ...   e.g.  guest-get-osinfo
                                      guest-file-open path=/etc/hostname
  exec PROGRAM ARGS...          run a program in the guest, show its output and exit code
  help                          list the commands the agent has enabled
  exit                          leave (or Ctrl-D)
Tab completes command names (from the agent's guest-info) and argument names.
When stdin is not a terminal, lines are run in order and the shell stops at
the first error (exit status 1) unless --keep-going.

Options:
  --timeout D               per-command bound (default 30s)
  --connect-timeout D       connect + resynchronise bound (default 10s)
  --retry                   keep retrying while the socket does not exist yet
  --keep-going              batch mode: continue after errors
  --pretty | --compact      force indented / one-line JSON
  -N, --skip-negotiation    accepted, as in qemu's qmp-shell -N for qemu-ga (the agent never
                            negotiates)
  -v, --verbose             show details of errors
  -h, --help                show this help`;

/** Completes an agent shell line: command names first, then `arg=` names of that command. */
export function completeAgent(
  line: string,
  cursor: number,
  commands: readonly string[],
): Completion {
  const before = line.slice(0, cursor);
  const start = before.search(/\S*$/);
  const word = before.slice(start);
  const words = before.slice(0, start).trim().split(/\s+/).filter(Boolean);
  let pool: string[];
  if (words.length === 0) pool = [...commands, "exec", "help", "exit"];
  else {
    const known = (AGENT_COMMAND_ARGUMENTS as Record<string, readonly string[]>)[words[0]] ?? [];
    const given = new Set(words.slice(1).map((w) => w.split("=")[0]));
    pool = word.includes("=") ? [] : known.filter((a) => !given.has(a)).map((a) => `${a}=`);
  }
  const candidates = [...new Set(pool.filter((c) => c.startsWith(word)))].sort();
  return { start, candidates };
}

/** What one line did. */
type Status = "ok" | "error" | "exit";

/** Runs one shell line against the agent. */
export async function runAgentLine(
  agent: AgentClient,
  line: string,
  out: { result(t: string): void; error(t: string): void },
  options: { timeoutMs?: number; pretty: boolean; commands: readonly string[] },
): Promise<Status> {
  const text = line.trim();
  if (text === "" || text.startsWith("#")) return "ok";
  try {
    const [name, ...rest] = shellSplit(text);
    if (name === "exit" || name === "quit") return "exit";
    if (name === "help") {
      out.result(options.commands.join("\n"));
      return "ok";
    }
    if (name === "exec") {
      if (rest.length === 0) throw new UsageError("exec needs a PROGRAM, e.g. exec /bin/ls -l /");
      const r = await agent.exec(rest[0], rest.slice(1), { timeout: options.timeoutMs });
      if (r.stdout) out.result(r.stdout.replace(/\n$/, ""));
      if (r.stderr) out.error(r.stderr.replace(/\n$/, ""));
      const end = r.exitCode === null ? `signal ${r.signal}` : `exit code ${r.exitCode}`;
      const cut = r.stdoutTruncated || r.stderrTruncated ? " (output truncated)" : "";
      (r.exitCode === 0 ? out.result : out.error)(`[${end}]${cut}`);
      return r.exitCode === 0 ? "ok" : "error";
    }
    const args = parseKeyValues(rest);
    const value = await agent.executeRaw(name, Object.keys(args).length ? args : undefined, {
      timeout: options.timeoutMs,
    });
    out.result(toJson(value ?? null, options.pretty));
    return "ok";
  } catch (err) {
    out.error(formatError("error", err).replace(/^error: error: /, "Error: "));
    return "error";
  }
}

/** Runs `qmp shell --agent` with `argv` (without `--agent`); returns the exit code. */
export async function agentShellCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      verbose: { type: "boolean", short: "v" },
      timeout: { type: "string" },
      "connect-timeout": { type: "string" },
      retry: { type: "boolean" },
      "keep-going": { type: "boolean" },
      pretty: { type: "boolean" },
      compact: { type: "boolean" },
      "skip-negotiation": { type: "boolean", short: "N" }, // qmp-shell -N: nothing to skip
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    writeOut(AGENT_SHELL_HELP + "\n");
    return EXIT_OK;
  }
  const [address, extra] = positionals;
  if (address === undefined) throw new UsageError("Missing ADDRESS after --agent");
  if (extra !== undefined) throw new UsageError(`Unexpected argument "${extra}"`);
  const timeoutMs = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout);
  const connectTimeout = values["connect-timeout"] === undefined
    ? 10_000
    : durationOption("connect-timeout", values["connect-timeout"]);
  await using agent = await connectAgent(address, {
    timeout: connectTimeout,
    retry: values.retry,
  });
  const info = await agent.info({ timeout: timeoutMs });
  // Completion comes from guest-info's list; an agent that answers something else still gets
  // a shell, without completion.
  const listed = Array.isArray(info?.supported_commands) ? info.supported_commands : undefined;
  if (!listed) {
    writeErr(
      "qmp shell: notice: the agent's guest-info reply has no supported_commands list; " +
        "no completion\n",
    );
  }
  const commands = (listed ?? [])
    .filter((c) => c !== null && typeof c === "object" && c.enabled && typeof c.name === "string")
    .map((c) => c.name).sort();
  const interactive = Deno.stdin.isTerminal() && stdoutIsTty();
  const pretty = values.pretty ? true : values.compact ? false : interactive;
  if (!interactive) {
    let lineNo = 0;
    let failures = 0;
    const out = {
      result: (t: string) => writeOut(t + "\n"),
      error: (t: string) => writeErr(`qmp shell: line ${lineNo}: ${t}\n`),
    };
    for await (const line of readLines(Deno.stdin.readable)) {
      lineNo++;
      const status = await runAgentLine(agent, line, out, { timeoutMs, pretty, commands });
      if (status === "exit") break;
      if (status === "error") {
        failures++;
        if (!values["keep-going"]) return EXIT_FAILURE;
      }
    }
    return failures ? EXIT_FAILURE : EXIT_OK;
  }
  const editor = new LineEditor({
    write: writeOut,
    history: new History(),
    complete: (line, cursor) => completeAgent(line, cursor, commands),
  });
  const out = { result: (t: string) => editor.print(t), error: (t: string) => editor.print(t) };
  editor.print(
    `Connected to qemu-ga ${info.version} at ${agent.address} (${commands.length} commands ` +
      `enabled). Tab completes; "help" lists commands; Ctrl-D exits.`,
  );
  Deno.stdin.setRaw(true);
  const input = (async () => {
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await Deno.stdin.read(buf).catch(() => null);
      if (n === null) return editor.end();
      editor.feed(buf.slice(0, n));
    }
  })();
  input.catch(() => {});
  try {
    while (!agent.closed) {
      const r = await editor.readLine("(qga) ");
      if (r.kind === "eof") break;
      if (r.kind === "interrupt") continue;
      if ((await runAgentLine(agent, r.line, out, { timeoutMs, pretty, commands })) === "exit") {
        break;
      }
    }
  } finally {
    try {
      Deno.stdin.setRaw(false);
    } catch { /* not a terminal any more */ }
  }
  return EXIT_OK;
}
