#!/usr/bin/env -S deno run --allow-read --allow-write --allow-net --allow-run --allow-env
/**
 * `qmp`: the qmpkit command line. Subcommands: `shell` (interactive REPL with
 * completion), `exec` (one command), `info` (VM summary), `events` (event
 * stream as JSON lines), `run` (playbooks), `agent` (the guest agent), `qom`
 * (the QEMU object model).
 *
 * Run it with `deno task qmp ...`, or install it:
 * `deno install -g -n qmp --allow-read --allow-write --allow-net --allow-run --allow-env scripts/qmp.ts`.
 *
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };
import {
  COMMON_OPTIONS,
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  exitCodeFor,
  formatError,
  UsageError,
  writeErr,
  writeOut,
} from "./cli/common.ts";
// `exec`, the one-shot command, is imported statically: its own module is small (what it
// runs is common.ts's and the client's, loaded anyway), and a dynamic import costs it
// ~0.5 ms more (Deno prepares a module graph for each one).
import { execCommand } from "./cli/exec.ts";

/** The version printed by `qmp --version`. */
export const VERSION: string = denoJson.version;

/** `qmp --help`. */
export const MAIN_HELP = `qmp ${VERSION}: talk to QEMU over QMP

Usage: qmp [OPTIONS] COMMAND [ARGS...]    (qmp COMMAND --help for details)

Commands:
  shell ADDRESS             interactive QMP shell: key=value syntax, Tab completion from the
                            live schema, history, events shown as they arrive; batch mode
                            when stdin is not a terminal
  exec ADDRESS CMD [k=v..]  run one command, print its return value as JSON
  info ADDRESS              summary of the VM (version, state, devices, ...); --json
  events ADDRESS            stream events as JSON lines (--name, --count, --timeout)
  qom [ADDRESS] ls|get|set|tree ...
                            the QEMU object model: list, read, set properties; the
                            composition tree (--props: with values); --json
  run PLAYBOOK              run a playbook (see qmp run --help)
  agent ADDRESS CMD [k=v..] talk to the guest agent (qemu-ga); agent ADDRESS exec -- PROG ARGS
                            runs a program in the guest and exits with its exit code
  help [COMMAND]            show this help, or a command's help
  version                   print the version (also --version)

ADDRESS is unix:PATH, a path (with "/", or a bare name such as qmp.sock: a
socket in the current directory), tcp:HOST:PORT, HOST:PORT or [::1]:PORT, or
ssh://[USER@]HOST[:PORT]/PATH (a socket on another host, through the system ssh:
--ssh-config FILE, --ssh-option KEY=VALUE); without one, $QMP_SOCKET is used. Every command also takes --launch (a
throwaway QEMU, -machine none by default; --launch-args "..." or --guest tiny)
instead of an ADDRESS.
Options common to all commands (-v/--verbose, --retry, --connect-timeout D,
--launch ...) may also come before COMMAND: qmp -v exec ADDRESS query-status.

Exit status: 0 ok, 1 QMP/connection error, 2 usage error.`;

type Handler = (argv: string[]) => Promise<number>;

// Every other subcommand's module is imported when it runs: `qmp exec` does not load the
// shell's line editor and schema help, the agent client or the playbook runner. The
// specifiers are not string literals on purpose: Deno reads and parses the module graph
// of every literal `import("...")` at start-up, whether it runs or not (~2.5 ms of
// `qmp --version`, ~1.6 ms of `qmp exec`); tests/cli_startup_test.ts checks the graph.
const load = <T>(path: string): Promise<T> => import(new URL(path, import.meta.url).href);

const COMMANDS: Record<string, { handler: Handler; help?: () => Promise<string> }> = {
  shell: {
    handler: async (argv) =>
      (await load<typeof import("./cli/shell.ts")>("./cli/shell.ts")).shellCommand(argv),
  },
  exec: {
    handler: (argv) => execCommand(argv),
  },
  info: {
    handler: async (argv) =>
      (await load<typeof import("./cli/info.ts")>("./cli/info.ts")).infoCommand(argv),
  },
  events: {
    handler: async (argv) =>
      (await load<typeof import("./cli/events.ts")>("./cli/events.ts")).eventsCommand(argv),
  },
  agent: {
    handler: async (argv) =>
      (await load<typeof import("./cli/agent.ts")>("./cli/agent.ts")).agentCommand(argv),
  },
  qom: {
    handler: async (argv) =>
      (await load<typeof import("./cli/qom.ts")>("./cli/qom.ts")).qomCommand(argv),
  },
  run: {
    handler: async (argv) =>
      (await load<typeof import("./cli/run.ts")>("./cli/run.ts")).runCommand(argv),
  },
};

/** Runs the CLI with `argv` (without the program name); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let split: { globals: string[]; at: number };
  try {
    split = leadingOptions(argv);
  } catch (err) {
    writeErr(formatError("qmp", err) + "\n");
    return EXIT_USAGE;
  }
  // Options before the command (qmp -v exec ...) belong to the command.
  const first = argv[split.at];
  const rest = [...split.globals, ...argv.slice(split.at + 1)];
  if (first === undefined && split.globals.length > 0) {
    writeErr(`qmp: error: missing COMMAND after ${split.globals.join(" ")} (see qmp --help)\n`);
    return EXIT_USAGE;
  }
  if (first === undefined) {
    writeErr(MAIN_HELP + "\n");
    return EXIT_USAGE;
  }
  if (first === "--help" || first === "-h") {
    writeOut(MAIN_HELP + "\n");
    return EXIT_OK;
  }
  if (first === "--version" || first === "-V" || first === "version") {
    writeOut(`qmp (qmpkit) ${VERSION}\n`);
    return EXIT_OK;
  }
  if (first === "help") {
    if (rest.length === 0) {
      writeOut(MAIN_HELP + "\n");
      return EXIT_OK;
    }
    return await main([rest[0], "--help"]);
  }
  const command = COMMANDS[first];
  const verbose = rest.includes("--verbose") || rest.includes("-v");
  const prog = `qmp ${first}`;
  if (!command) {
    writeErr(
      `qmp: error: unknown command "${first}" (commands: ${Object.keys(COMMANDS).join(", ")}, ` +
        `help, version)\n`,
    );
    return EXIT_USAGE;
  }
  try {
    return await command.handler(rest);
  } catch (err) {
    // The reader went away (`| head`): stop quietly, as other Unix tools do.
    if (err instanceof Deno.errors.BrokenPipe) return EXIT_OK;
    if (first === "run" && isMissingRun(err)) {
      writeErr(`qmp run: error: the playbook runner is not installed (scripts/cli/run.ts)\n`);
      return EXIT_FAILURE;
    }
    writeErr(formatError(prog, err, verbose) + "\n");
    return exitCodeFor(err);
  }
}

/**
 * The common options given before the command (`qmp -v exec ...`): they are
 * passed on to the command. Stops at the first word that is not one, and at
 * `--help` / `--version` (handled by `main`). An unknown option there is a
 * {@link UsageError}.
 */
function leadingOptions(argv: string[]): { globals: string[]; at: number } {
  const globals: string[] = [];
  let i = 0;
  while (i < argv.length && argv[i].startsWith("-") && !MAIN_FLAGS.has(argv[i])) {
    const arg = argv[i];
    const name = arg.startsWith("--") ? arg.slice(2).split("=")[0] : undefined;
    const spec = name !== undefined
      ? (COMMON_OPTIONS as Record<string, { type: string }>)[name]
      : Object.values(COMMON_OPTIONS).find((o) => "short" in o && `-${o.short}` === arg);
    if (!spec) {
      throw new UsageError(
        `unknown option ${arg} before the command (options go after it: qmp COMMAND ${arg} ...)`,
      );
    }
    globals.push(arg);
    if (spec.type === "string" && !arg.includes("=")) {
      if (argv[i + 1] === undefined) throw new UsageError(`${arg} needs a value`);
      globals.push(argv[++i]);
    }
    i++;
  }
  return { globals, at: i };
}

const MAIN_FLAGS = new Set(["--help", "-h", "--version", "-V"]);

function isMissingRun(err: unknown): boolean {
  return err instanceof Error && /run\.ts/.test(err.message) &&
    /not found|Module not found|Cannot find module/i.test(err.message);
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(code);
}
