/**
 * `qmp agent ADDRESS COMMAND [key=value ...]`: runs one guest agent (qemu-ga) command and prints
 * its return value as JSON; `qmp agent ADDRESS exec -- PROGRAM [ARGS...]` runs a program in the
 * guest, prints its stdout/stderr and exits with its exit code.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { AGENT_NO_REPLY_COMMANDS } from "../../lib/qapi/agent_types.ts";
import { type AgentClient, connectAgent } from "../../mod.ts";
import { parseArgsJson, parseKeyValues } from "./args.ts";
import {
  durationOption,
  EXIT_OK,
  exitCodeFor,
  formatError,
  toJson,
  UsageError,
  writeErr,
  writeOut,
} from "./common.ts";

/** Exit status of `qmp agent ... exec` when the agent (not the guest program) failed. */
export const EXIT_AGENT_FAILURE = 255;

/** `qmp agent --help`. */
export const AGENT_HELP = `Usage: qmp agent ADDRESS COMMAND [key=value ...] [options]
       qmp agent ADDRESS exec [options] -- PROGRAM [ARGS...]

Talks to the QEMU guest agent (qemu-ga) through the host side of its virtio-serial
port: a chardev socket, e.g. -chardev socket,id=qga0,path=/tmp/qga.sock,server=on,wait=off
-device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
ADDRESS may also be a libvirt domain (libvirt:DOMAIN, libvirt+URI#DOMAIN): the commands
then go through libvirt (virDomainQemuAgentCommand).

COMMAND is any agent command (guest-info lists them): its return value is printed as
JSON. Arguments are key=value as in qmp exec (JSON literals when they parse, dotted keys
nest). guest-shutdown and guest-suspend-* send no reply when they succeed: silence for
one second counts as success.

exec runs PROGRAM (an absolute path in the guest) with guest-exec, waits for it, writes its
stdout and stderr to ours and exits with its exit code (128+N when signal N ended it).

Options:
  --args JSON               arguments as one JSON object (key=value items are added to it)
  --pretty | --compact      force indented / one-line JSON
  --timeout D               per-command bound (default 30s); for exec, the whole run
  --connect-timeout D       connect + resynchronise bound (default 10s)
  --retry                   keep retrying while the socket does not exist yet
  --input TEXT              exec: write TEXT to the program's stdin
  --env NAME=VALUE          exec: environment variable (repeatable; replaces the default env)
  --max-output BYTES        exec: keep at most BYTES of stdout and of stderr (default 16 MiB)
  -v, --verbose             show details of errors
  -h, --help                show this help

Exit status: COMMAND: 0 ok, 1 agent error (GenericError, CommandNotFound, ...),
connection failure or timeout (the agent is silent when qemu-ga is not running),
2 usage error. exec: the program's exit code; 255 when the agent could not run it or
did not report its end in time (the program is then left running in the guest); 2 usage.

Examples:
  qmp agent unix:/tmp/qga.sock guest-info
  qmp agent /tmp/qga.sock guest-get-osinfo --compact
  qmp agent /tmp/qga.sock guest-file-open path=/etc/hostname
  qmp agent /tmp/qga.sock exec -- /bin/ls -l /
  qmp agent /tmp/qga.sock exec --input "hello" -- /bin/cat`;

/** Runs `qmp agent` with `argv` (after the subcommand name); returns the exit code. */
export async function agentCommand(argv: string[]): Promise<number> {
  const dash = argv.indexOf("--");
  const head = dash < 0 ? argv : argv.slice(0, dash);
  const tail = dash < 0 ? [] : argv.slice(dash + 1);
  const { values, positionals } = parseArgs({
    args: head,
    options: {
      help: { type: "boolean", short: "h" },
      verbose: { type: "boolean", short: "v" },
      args: { type: "string" },
      pretty: { type: "boolean" },
      compact: { type: "boolean" },
      timeout: { type: "string" },
      "connect-timeout": { type: "string" },
      retry: { type: "boolean" },
      input: { type: "string" },
      env: { type: "string", multiple: true },
      "max-output": { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    writeOut(AGENT_HELP + "\n");
    return EXIT_OK;
  }
  const address = positionals.shift();
  if (address === undefined) {
    throw new UsageError("Missing ADDRESS (the agent's socket, e.g. unix:/tmp/qga.sock)");
  }
  const command = positionals.shift();
  if (command === undefined) throw new UsageError("Missing COMMAND (e.g. guest-info, or exec)");
  if (command.includes("=")) {
    throw new UsageError(`Expected a COMMAND name before key=value arguments, got "${command}"`);
  }
  const timeout = values.timeout === undefined
    ? undefined
    : durationOption("timeout", values.timeout);
  const connectTimeout = values["connect-timeout"] === undefined
    ? 10_000
    : durationOption("connect-timeout", values["connect-timeout"]);
  const pretty = values.pretty ? true : values.compact ? false : undefined;

  if (command === "exec") {
    const program = [...positionals, ...tail];
    if (program.length === 0) throw new UsageError("exec needs a PROGRAM: exec -- /bin/ls -l /");
    if (values.args !== undefined) throw new UsageError("--args does not apply to exec");
    const maxOutput = values["max-output"] === undefined
      ? undefined
      : parseBytes(values["max-output"]);
    const env = values.env;
    for (const e of env ?? []) {
      if (!/^[^=]+=/.test(e)) throw new UsageError(`--env expects NAME=VALUE, got "${e}"`);
    }
    let agent: AgentClient | undefined;
    try {
      agent = await connectAgent(address, { timeout: connectTimeout, retry: values.retry });
      const [path, ...args] = program;
      const r = await agent.exec(path, args, {
        input: values.input,
        env,
        timeout: timeout ?? 30_000,
        maxOutput,
      });
      await writeAll(Deno.stdout, r.stdoutBytes);
      await writeAll(Deno.stderr, r.stderrBytes);
      if (r.stdoutTruncated) writeErr(`qmp agent: warning: the program's stdout was truncated\n`);
      if (r.stderrTruncated) writeErr(`qmp agent: warning: the program's stderr was truncated\n`);
      return r.exitCode ?? 128 + (r.signal ?? 0);
    } catch (err) {
      if (err instanceof Deno.errors.BrokenPipe) return EXIT_OK;
      const line = formatError("qmp agent", err, Boolean(values.verbose)).replace(
        /exec\("\/bin\/kill", \["(\d+)"\]\)/,
        `qmp agent ${address} exec -- /bin/kill $1`,
      );
      writeErr(line + "\n");
      return exitCodeFor(err) === 2 ? 2 : EXIT_AGENT_FAILURE;
    } finally {
      await agent?.close();
    }
  }

  const base = values.args !== undefined ? parseArgsJson(values.args) : {};
  const args = parseKeyValues(positionals, base);
  await using agent = await connectAgent(address, {
    timeout: connectTimeout,
    retry: values.retry,
  });
  const value = await agent.executeRaw(
    command,
    Object.keys(args).length ? args : undefined,
    { timeout },
  );
  if ((AGENT_NO_REPLY_COMMANDS as readonly string[]).includes(command)) {
    writeErr(`qmp agent: ${command} sent; no reply means it was accepted\n`);
  } else {
    writeOut(toJson(value, pretty) + "\n");
  }
  return EXIT_OK;
}

function parseBytes(text: string): number {
  const m = /^(\d+)\s*([kKmMgG]i?[bB]?)?$/.exec(text.trim());
  if (!m) throw new UsageError(`--max-output expects a byte count (e.g. 1048576, 64K, 16M)`);
  const unit = (m[2] ?? "").toLowerCase()[0];
  const mult = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  return Number(m[1]) * mult;
}

async function writeAll(out: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  let rest = bytes;
  while (rest.length) rest = rest.subarray(await out.write(rest));
}
