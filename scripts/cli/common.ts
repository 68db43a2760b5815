/**
 * Shared plumbing of the `qmp` subcommands: exit codes, error reporting,
 * the common target options (an address, or `--launch` for a throwaway VM),
 * and JSON output.
 *
 * @module
 */
import { type OptionSpecs, parseArgs, UsageError } from "./parse_args.ts";
// The library's files, not mod.ts: `qmp exec` should load what it uses, nothing more
// (module loading dominated its start-up). The launcher is imported only for --launch.
import { type ClientOptions, connect, type QmpClient } from "../../lib/client.ts";
import {
  AddressError,
  LaunchError,
  QmpCommandError,
  QmpError,
  TlsError,
} from "../../lib/errors.ts";
import type { TlsOptions } from "../../lib/tls_transport.ts";
import { parseDuration } from "../../lib/duration.ts";
import { redactText } from "../../lib/redact.ts";
import type { Machine } from "../../lib/machine.ts";
import { stringifyJson } from "../../lib/json.ts";
import type { StopSignal } from "./signals.ts";
import { SSH_HELP, sshFlags } from "./ssh_flags.ts";
import { editDistance } from "../../lib/edit_distance.ts";

export { UsageError };

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: QMP error, connection error, timeout, launch failure. */
export const EXIT_FAILURE = 1;
/** Exit code: bad command line (unknown option, bad address syntax, bad key=value). */
export const EXIT_USAGE = 2;

/** The exit code for an error: 2 for usage errors, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError || err instanceof AddressError || isParseArgsError(err)) {
    return EXIT_USAGE;
  }
  // A --tls-ca/--tls-cert/--tls-key file that cannot be read or is not PEM.
  if (err instanceof TlsError && err.kind === "credentials") return EXIT_USAGE;
  if (err instanceof RangeError && /duration/i.test(err.message)) return EXIT_USAGE;
  return EXIT_FAILURE;
}

function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

/**
 * Formats an error for stderr: one line by default (`qmp exec: error: ...`);
 * with `verbose`, the full message, the stack and the cause chain.
 */
export function formatError(prog: string, err: unknown, verbose = false): string {
  const e = err instanceof Error ? err : new Error(String(err));
  const message = cliWording(e.message.trim());
  if (!verbose) {
    const file = fileErrorLine(e);
    if (file) return `${prog}: error: ${file}`;
    let [first, ...rest] = message.split("\n");
    if (e instanceof LaunchError && e.stderr) {
      // QEMU's own complaint is the useful part ("unsupported machine type", ...).
      const said = e.stderr.split("\n").find((l) => l.trim() !== "");
      if (said) first = `${first}: ${said.trim()}`;
    }
    const more = rest.length > 0 || (!(e instanceof QmpError) && !(e instanceof UsageError) &&
        !isParseArgsError(e))
      ? " (--verbose for details)"
      : "";
    const hint = err instanceof UsageError || isParseArgsError(err) ? ` (see ${prog} --help)` : "";
    return redactText(`${prog}: error: ${first}${hint}${more}`);
  }
  const lines = [`${prog}: error: ${message}`];
  if (e instanceof LaunchError) lines.push(`  command line: ${e.commandLine.join(" ")}`);
  if (e.stack) lines.push(...e.stack.split("\n").slice(1).map((l) => `  ${l.trim()}`));
  let cause = e.cause;
  let depth = 0;
  while (cause !== undefined && depth++ < 8) {
    if (cause instanceof Error) {
      lines.push(`caused by: ${cause.name}: ${cause.message}`);
      cause = cause.cause;
    } else {
      lines.push(`caused by: ${String(cause)}`);
      break;
    }
  }
  return redactText(lines.join("\n"));
}

/** The library speaks in API options; the CLI user has flags (or nothing to change). */
const CLI_WORDING: [string | RegExp, string][] = [
  ["Pass retry: true", "Use --retry"],
  [
    /Raise maxMessageSize if this peer is trusted and really sends messages this large/,
    "qmp accepts messages up to 10 MiB",
  ],
  ["the ssh option -o ", "--ssh-option "],
  ["the ssh options' identityFile", "--ssh-option IdentityFile=PATH"],
  ["or name it in the ssh options' binary", "or put it on PATH"],
];

/** Rewrites library advice (API option names) as CLI advice. */
export function cliWording(message: string): string {
  for (const [from, to] of CLI_WORDING) message = message.replace(from, to);
  return message;
}

/**
 * A file the user named could not be opened (--log, --history, ...): Deno's
 * `No such file or directory (os error 2): open '/x'` as
 * `cannot open /x: No such file or directory`. Undefined for other errors.
 */
function fileErrorLine(e: Error): string | undefined {
  const fsError = e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied ||
    e instanceof Deno.errors.AlreadyExists || e instanceof Deno.errors.IsADirectory ||
    e instanceof Deno.errors.NotADirectory || e instanceof Deno.errors.NotCapable;
  if (!fsError) return undefined;
  const m = /^(.*?)(?: \(os error \d+\))?: (\w+) '(.*)'$/.exec(e.message);
  if (!m) return undefined;
  return `cannot ${m[2]} ${m[3]}: ${m[1]}`;
}

/** The `--tls-*` and `--ssh-*` options (of every subcommand and of play.ts), for `parseArgs`. */
export const REMOTE_OPTIONS = {
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-hostname": { type: "string" },
  "ssh-config": { type: "string" },
  "ssh-option": { type: "string", multiple: true },
} as const satisfies OptionSpecs;

/** Options every subcommand accepts (see `parse_args.ts`). */
export const COMMON_OPTIONS = {
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
  launch: { type: "boolean" },
  "launch-args": { type: "string" },
  guest: { type: "string" },
  memory: { type: "string" },
  "connect-timeout": { type: "string" },
  retry: { type: "boolean" },
  ...REMOTE_OPTIONS,
} as const satisfies OptionSpecs;

/** Help text for {@link COMMON_OPTIONS}. */
export const COMMON_HELP = `Target (ADDRESS, or one of the --launch options instead of it):
  ADDRESS                   unix:PATH, a path (with "/", or a bare name such as qmp.sock),
                            tcp:HOST:PORT, HOST:PORT, [::1]:PORT, tls://HOST:PORT (QEMU's TLS
                            monitor, see --tls-*), or a socket on another host through ssh:
                            ssh://[USER@]HOST[:PORT]/PATH; default: $QMP_SOCKET
  --launch                  start a throwaway QEMU (-machine none) and use it; killed at exit
  --launch-args "ARGS"      QEMU arguments for --launch (implies --launch), e.g. "-M pc -S"
  --guest tiny              boot the tiny test guest (implies --launch; deno task guest builds it)
  --memory SIZE             guest memory for --launch (e.g. 256, 1G)
  --connect-timeout D       connect + greeting deadline (default 5s; e.g. 500ms, 2s, 1m)
  --retry                   keep retrying while the socket does not exist yet (until the deadline)
  --tls-ca FILE             with tls://: the CA that signed QEMU's certificate (its ca-cert.pem)
  --tls-cert FILE           with tls://: client certificate, for a monitor with verify-peer=on
  --tls-key FILE            with tls://: the client certificate's private key
  --tls-hostname NAME       with tls://: the name QEMU's certificate must carry, if not HOST
${SSH_HELP}
Common:
  -v, --verbose             show details of errors (stack, causes) and launch steps
  -h, --help                show this help`;

/** The values of the common options after parsing. */
export interface CommonValues {
  /** `--help`. */
  help?: boolean;
  /** `--verbose`. */
  verbose?: boolean;
  /** `--launch`. */
  launch?: boolean;
  /** `--launch-args`. */
  "launch-args"?: string;
  /** `--guest`. */
  guest?: string;
  /** `--memory`. */
  memory?: string;
  /** `--connect-timeout`. */
  "connect-timeout"?: string;
  /** `--retry`. */
  retry?: boolean;
  /** `--tls-ca`. */
  "tls-ca"?: string;
  /** `--tls-cert`. */
  "tls-cert"?: string;
  /** `--tls-key`. */
  "tls-key"?: string;
  /** `--tls-hostname`. */
  "tls-hostname"?: string;
  /** `--ssh-config`. */
  "ssh-config"?: string;
  /** `--ssh-option` (repeatable). */
  "ssh-option"?: string[];
}

/**
 * The `--tls-*` options as {@link TlsOptions} (file paths, read by the
 * library), or `undefined` when none is given. Throws {@link UsageError} when
 * they are given without a `tls://` address.
 */
export function tlsOptions(
  values: CommonValues,
  address: string | undefined,
): TlsOptions | undefined {
  const given = (["tls-ca", "tls-cert", "tls-key", "tls-hostname"] as const)
    .filter((k) => values[k] !== undefined);
  const isTls = address !== undefined && /^tls:\/\//i.test(address.trim());
  if (given.length > 0 && !isTls) {
    throw new UsageError(
      `--${given[0]} applies to a tls://HOST:PORT address` +
        (address === undefined ? " (not to --launch)" : `, not ${address}`),
    );
  }
  if (!isTls) return undefined;
  return {
    caFile: values["tls-ca"],
    certFile: values["tls-cert"],
    keyFile: values["tls-key"],
    hostname: values["tls-hostname"],
  };
}

/**
 * Parses `argv` with the common options plus `extra`. Unknown options and
 * bad values throw (mapped to exit code 2 by {@link exitCodeFor}).
 */
export function parseCommandLine<O extends OptionSpecs>(
  argv: string[],
  extra: O,
): { values: CommonValues & Record<string, unknown>; positionals: string[] } {
  const options = { ...COMMON_OPTIONS, ...extra };
  let parsed;
  try {
    parsed = parseArgs({
      args: attachDashValues(argv, options),
      options,
    });
  } catch (e) {
    if (!isParseArgsError(e)) throw e;
    throw new UsageError(describeParseArgsError(e as Error, options));
  }
  const values = parsed.values as CommonValues & Record<string, unknown>;
  if (values.pretty && values.compact) {
    throw new UsageError("--pretty and --compact conflict: give one of them");
  }
  return { values, positionals: parsed.positionals };
}

/** What qemu's qmp-shell users may type, and what to say when qmpkit has no such flag. */
const FOREIGN_FLAGS: Record<string, string> = {
  "-N": "it is a qmp shell option (skip capabilities negotiation; for qemu-ga: qmp agent)",
  "--skip-negotiation":
    "it is a qmp shell option (skip capabilities negotiation; for qemu-ga: qmp agent)",
};

/** One line for a `parseArgs` error, naming the option and the nearest one we have. */
function describeParseArgsError(
  e: Error,
  options: OptionSpecs,
): string {
  const code = (e as { code?: string }).code;
  const quoted = /'([^']+)'/.exec(e.message)?.[1] ?? "";
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const flag = quoted.split("=")[0];
    const foreign = FOREIGN_FLAGS[flag];
    if (foreign) return `unknown option ${flag}: ${foreign}`;
    const near = nearestOption(flag, options);
    return `unknown option ${flag}` + (near ? ` (did you mean ${near}?)` : "");
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const flag = quoted.split(" ")[0];
    const spec = options[flag.replace(/^-+/, "")] ??
      Object.values(options).find((o) => `-${o.short}` === flag);
    return spec?.type === "boolean" ? `${flag} takes no value` : `${flag} needs a value`;
  }
  return e.message.replace(/'/g, "");
}

function nearestOption(
  flag: string,
  options: OptionSpecs,
): string | undefined {
  if (!flag.startsWith("--")) {
    // -p where only --pretty exists: the one long option with that initial.
    const letter = flag.slice(1);
    const same = Object.keys(options).filter((k) => k === letter);
    const initial = Object.keys(options).filter((k) => letter.length === 1 && k[0] === letter);
    const pick = same.length === 1 ? same : initial.length === 1 ? initial : [];
    return pick.length === 1 ? `--${pick[0]}` : undefined;
  }
  const name = flag.slice(2);
  let best: string | undefined;
  let bestDist = 3;
  for (const k of Object.keys(options)) {
    const d = k.startsWith(name) && name.length >= 3 ? 1 : editDistance(name, k);
    if (d < bestDist) [best, bestDist] = [k, d];
  }
  return best === undefined ? undefined : `--${best}`;
}

/**
 * Rewrites `--opt VALUE` as `--opt=VALUE` for string options whose value
 * starts with "-" (`--launch-args "-M pc -S"`), which `parseArgs` would
 * otherwise reject as ambiguous.
 */
function attachDashValues(
  argv: string[],
  options: OptionSpecs,
): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      out.push(...argv.slice(i));
      break;
    }
    const name = a.startsWith("--") ? a.slice(2) : undefined;
    const next = argv[i + 1];
    if (
      name !== undefined && options[name]?.type === "string" && next !== undefined &&
      next.startsWith("-")
    ) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** True when the options ask for a launched VM instead of an address. */
export function wantsLaunch(values: CommonValues): boolean {
  return Boolean(values.launch || values["launch-args"] !== undefined || values.guest);
}

/**
 * Takes the ADDRESS positional unless launching. Without one, `$QMP_SOCKET`
 * (as in QEMU's Python tools) is the address. For commands that take more
 * positionals after ADDRESS (`exec ADDRESS COMMAND`, `takesCommand`), with
 * `$QMP_SOCKET` set, the first positional is the ADDRESS only when it looks
 * like one (a ":" or "/", or an existing socket file). Throws
 * {@link UsageError} when there is no address at all.
 */
export function takeAddress(
  values: CommonValues,
  positionals: string[],
  options: { takesCommand?: boolean; env?: (name: string) => string | undefined } = {},
): string | undefined {
  if (wantsLaunch(values)) {
    const first = positionals[0];
    if (first !== undefined && (looksLikeAddress(first) || isSocketFile(first))) {
      const flag = values.guest
        ? "--guest"
        : values["launch-args"] !== undefined
        ? "--launch-args"
        : "--launch";
      throw new UsageError(
        `both an ADDRESS (${first}) and ${flag} were given: ${flag} starts its own VM, ` +
          `so drop one of them`,
      );
    }
    return undefined;
  }
  const fromEnv = (options.env ?? envVar)("QMP_SOCKET") || undefined;
  const first = positionals[0];
  if (
    fromEnv !== undefined &&
    (first === undefined ||
      (options.takesCommand && !looksLikeAddress(first) && !isSocketFile(first)))
  ) {
    return fromEnv;
  }
  const address = positionals.shift();
  if (address === undefined) {
    throw new UsageError(
      "Missing ADDRESS (e.g. unix:/run/vm1/qmp.sock), or set QMP_SOCKET, or use --launch",
    );
  }
  return address;
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

function isSocketFile(path: string): boolean {
  try {
    return Deno.statSync(path).isSocket === true;
  } catch {
    return false;
  }
}

/**
 * True for what can only be an address, never a command name: a `unix:` or
 * `tcp:` prefix, a "/" or a ":".
 */
export function looksLikeAddress(text: string): boolean {
  return text.includes("/") || text.includes(":");
}

/** A connected QMP client and how to let it go. */
export interface Target {
  /** The negotiated client. */
  client: QmpClient;
  /** The address, for messages. */
  address: string;
  /** The launched VM, with `--launch`. */
  machine?: Machine;
  /** Closes the connection and shuts a launched VM down. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link openTarget} beyond the command line's. */
export interface TargetOptions {
  /**
   * Signals that stop a launched VM and exit (128 + signal number) once it
   * runs (during the launch, SIGINT and SIGTERM both do). Default SIGINT and
   * SIGTERM; a command that ends gracefully on Ctrl-C itself (`qmp events`)
   * leaves SIGINT out.
   */
  stopSignals?: readonly StopSignal[];
}

/**
 * Connects to `address`, or launches a throwaway VM when the options say so.
 * `clientOptions` are passed to the client either way (e.g. a transcript).
 */
export async function openTarget(
  address: string | undefined,
  values: CommonValues,
  clientOptions: ClientOptions = {},
  targetOptions: TargetOptions = {},
): Promise<Target> {
  const ssh = sshFlags(address, values["ssh-config"], values["ssh-option"]);
  const onWarning = (w: QmpError) => console.error(`qmp: warning: ${w.message}`);
  const options: ClientOptions = { onWarning, ...clientOptions };
  const tls = tlsOptions(values, address);
  if (address === undefined) {
    // Not a literal specifier: Deno would read the launcher's module graph at start-up,
    // with or without --launch (see `load` in scripts/qmp.ts).
    const { launchTarget }: typeof import("./launch_target.ts") = await import(
      new URL("./launch_target.ts", import.meta.url).href
    );
    return await launchTarget(values, options, targetOptions);
  }
  if (!looksLikeAddress(address) && !values.retry) {
    // A bare name is a socket in the current directory: say so if there is none.
    try {
      Deno.lstatSync(address);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new UsageError(
          `no socket named "${address}" in the current directory (a bare name is a unix ` +
            `socket path; a TCP address needs a port: HOST:PORT)`,
        );
      }
    }
  }
  const client = await connect(address, {
    ...options,
    timeout: values["connect-timeout"] === undefined
      ? "5s"
      : durationOption("connect-timeout", values["connect-timeout"]),
    retry: Boolean(values.retry),
    ...(tls ? { tls } : {}),
    ...(ssh ? { ssh } : {}),
  });
  return { client, address: client.address, close: () => client.close() };
}

/**
 * Parses a duration option (`500ms`, `10s`, `2m`, `1m30s`, or ms), or throws
 * {@link UsageError} naming the option.
 */
export function durationOption(option: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (e) {
    throw new UsageError(`--${option}: ${(e as Error).message}`);
  }
}

/** True when `stdout` is a terminal. */
export function stdoutIsTty(): boolean {
  try {
    return Deno.stdout.isTerminal();
  } catch {
    return false;
  }
}

/**
 * JSON for output: indented on a terminal (or when `pretty`), compact otherwise.
 * Integers beyond 2^53 (bigints) are printed digit for digit.
 */
export function toJson(value: unknown, pretty = stdoutIsTty()): string {
  return stringifyJson(value, pretty ? 2 : undefined);
}

const encoder = new TextEncoder();

/** Writes text to stdout completely (synchronously, so exit cannot cut it short). */
export function writeOut(text: string): void {
  writeAll(Deno.stdout, text);
}

/** Writes text to stderr completely. */
export function writeErr(text: string): void {
  writeAll(Deno.stderr, redactText(text)); // errors and warnings may quote a secret
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(file.writeSync(bytes));
}

/** A one-line description of a QMP command error: `desc (Class)`. */
export function describeCommandError(err: unknown): string {
  if (err instanceof QmpCommandError) return `${err.desc} (${err.class})`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * True when HMP output reports a failure. HMP has no error channel: a failed
 * command prints text in a successful reply. Recognised (QEMU 7.2): `Error: `
 * (hmp_handle_error), `unknown command: `, the argument parser's
 * `Try "help CMD" for more information`, and the plain messages of commands
 * that print their own (`invalid CPU index`, `invalid parameter: `,
 * `Cannot access memory`, `Device '...' not found`).
 */
export function isHmpError(text: string): boolean {
  const first = text.trimStart().split("\n", 1)[0];
  return HMP_ERROR_FIRST_LINE.some((re) => re.test(first)) ||
    /^Try "help [^"]*" for more information$/m.test(text);
}

const HMP_ERROR_FIRST_LINE = [
  /^Error: /,
  /^unknown command: /,
  /^invalid CPU index/,
  /^invalid parameter: /,
  /: Cannot access memory$/,
  /^Device '.*' not found$/,
];

/** Converts HMP output (CRLF line ends) to plain text lines. */
export function hmpText(output: unknown): string {
  return String(output ?? "").replace(/\r\n/g, "\n");
}

/**
 * Runs `body` with a target and always releases it (closes the connection,
 * shuts a launched VM down), even when `body` throws.
 */
export async function withTarget<T>(
  address: string | undefined,
  values: CommonValues,
  clientOptions: ClientOptions,
  body: (target: Target) => Promise<T>,
  targetOptions: TargetOptions = {},
): Promise<T> {
  const target = await openTarget(address, values, clientOptions, targetOptions);
  try {
    return await body(target);
  } finally {
    await target.close();
  }
}

/** Type guard re-exported for subcommands: is `err` a command error with this class? */
export function isCommandError(err: unknown, errorClass?: string): err is QmpCommandError {
  return err instanceof QmpCommandError && (errorClass === undefined || err.class === errorClass);
}
