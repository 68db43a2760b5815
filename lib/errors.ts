/**
 * Typed errors raised by qmpkit. Every error extends {@link QmpError}, so one
 * `instanceof QmpError` check catches anything the library throws on purpose.
 *
 * @module
 */
import { redactCommandLine, redactMessage, redactText } from "./redact.ts";

/** Options accepted by every qmpkit error constructor. */
export interface QmpErrorOptions {
  /** The underlying error (an OS error, a parse error, ...). */
  cause?: unknown;
}

/**
 * Base class of every error qmpkit throws.
 *
 * @example
 * ```ts ignore
 * try {
 *   await qmp.execute("stop");
 * } catch (e) {
 *   if (e instanceof QmpError) console.error(e.name, e.message);
 * }
 * ```
 */
export class QmpError extends Error {
  /** Creates an error with a message and an optional cause. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "QmpError";
  }
}

/** An address string or object could not be understood. Raised before any I/O. */
export class AddressError extends QmpError {
  /** The address as it was given. */
  readonly address: unknown;
  /** Creates an error for `address` with a message explaining the accepted forms. */
  constructor(address: unknown, reason: string, options?: QmpErrorOptions) {
    super(
      `Invalid QMP address ${JSON.stringify(address)}: ${reason}. ` +
        `Use "unix:/path/to/qmp.sock", "tcp:HOST:PORT", "HOST:PORT", "[::1]:PORT", ` +
        `"tls://HOST:PORT", "ssh://[USER@]HOST[:PORT]/PATH" or "libvirt:DOMAIN".`,
      options,
    );
    this.name = "AddressError";
    this.address = address;
  }
}

/** Connecting to the QMP server failed (refused, no such socket, permission, ...). */
export class ConnectionError extends QmpError {
  /** The address the client tried to reach, in canonical form (`unix:/x`, `tcp:h:p`). */
  readonly address?: string;
  /** Creates a connection error. */
  constructor(message: string, options?: QmpErrorOptions & { address?: string }) {
    super(message, options);
    this.name = "ConnectionError";
    this.address = options?.address;
  }
}

/**
 * The QMP monitor is serving another client. QMP serves one client at a time,
 * and QEMU accepts no connection while one is attached: the first few
 * connects wait in the socket's queue (and `connect()` times out waiting for
 * the greeting, with a `TimeoutError` that says the monitor is busy), later
 * ones find the queue full and fail at once with this error.
 *
 * @example
 * ```ts ignore
 * try {
 *   await connect("unix:/run/vm1/qmp.sock");
 * } catch (e) {
 *   if (e instanceof MonitorBusyError) console.error("another client is attached; try later");
 * }
 * ```
 */
export class MonitorBusyError extends ConnectionError {
  /** Creates a busy-monitor error for `address` (canonical form). */
  constructor(address: string, options?: QmpErrorOptions) {
    super(
      `The QMP monitor at ${address} is busy: another client is connected (QMP serves one client ` +
        `at a time) and the monitor's connection queue is full. Disconnect the other client or ` +
        `wait for it to finish, then retry.`,
      { ...options, address },
    );
    this.name = "MonitorBusyError";
  }
}

/**
 * What went wrong in a {@link TlsError}: `credentials` (a certificate or key
 * file unreadable or not PEM, checked before any I/O), `untrusted` (the
 * server's certificate is not signed by the given CA), `name-mismatch` (it does
 * not carry the name connected to), `expired` (it has expired or is not yet
 * valid), `client-certificate-required` (the server closed the connection
 * after the handshake and no client certificate was given),
 * `client-certificate-rejected` (it closed it although one was given),
 * `not-tls` (the server answered in plain text), `handshake` (anything else).
 */
export type TlsFailure =
  | "credentials"
  | "untrusted"
  | "name-mismatch"
  | "expired"
  | "client-certificate-required"
  | "client-certificate-rejected"
  | "not-tls"
  | "handshake";

/**
 * A TLS connection could not be set up. `kind` says why; the message says
 * what to do. Messages name certificate files by path, never their contents.
 */
export class TlsError extends ConnectionError {
  /** Why: see {@link TlsFailure}. */
  readonly kind: TlsFailure;
  /** Creates a TLS error. */
  constructor(
    message: string,
    options: QmpErrorOptions & { address?: string; kind: TlsFailure },
  ) {
    super(message, options);
    this.name = "TlsError";
    this.kind = options.kind;
  }
}

/**
 * What went wrong when reaching a QMP socket through ssh (see {@link SshError}):
 * - `"ssh-missing"`: the ssh program could not be run;
 * - `"config"`: ssh refused its configuration or options (a bad `-F` file, a bad `-o`);
 * - `"unreachable"`: name lookup, TCP connect or the SSH handshake failed (no route,
 *   refused, timed out, reset);
 * - `"auth"`: the server refused every key (`Permission denied (publickey)`);
 * - `"host-key"`: the host key is unknown or has changed (`Host key verification failed`);
 * - `"remote-socket"`: sshd could not open the remote socket (missing, not a socket,
 *   no permission, or forwarding to unix sockets disabled);
 * - `"forward"`: the local end of the tunnel could not be set up;
 * - `"exited"`: ssh ended for another reason (its last message says which).
 */
export type SshFailure =
  | "ssh-missing"
  | "config"
  | "unreachable"
  | "auth"
  | "host-key"
  | "remote-socket"
  | "forward"
  | "exited";

/**
 * Reaching a remote QMP socket through the system `ssh` client failed.
 * `failure` says how; `sshMessage` is what ssh printed about it (never key
 * material: ssh prints none).
 */
export class SshError extends ConnectionError {
  /** The kind of failure. */
  readonly failure: SshFailure;
  /** ssh's own message (its relevant stderr line), when it printed one. */
  readonly sshMessage?: string;
  /** Creates an ssh error. */
  constructor(
    message: string,
    failure: SshFailure,
    options?: QmpErrorOptions & { address?: string; sshMessage?: string },
  ) {
    super(message, options);
    this.name = "SshError";
    this.failure = failure;
    this.sshMessage = options?.sshMessage;
  }
}

/**
 * The connection is closed, or closed while a command or wait was pending.
 * `reason` tells who closed it.
 */
export class ConnectionClosedError extends ConnectionError {
  /**
   * `"client"`: closed by this side (`close()`); `"peer"`: the server went away
   * (EOF, reset); `"quit"`: closed after a successful `quit`; `"error"`: closed
   * because of a protocol error (see `cause`).
   */
  readonly reason: "client" | "peer" | "quit" | "error";
  /** Creates a closed-connection error. */
  constructor(
    message: string,
    options?: QmpErrorOptions & {
      address?: string;
      reason?: "client" | "peer" | "quit" | "error";
    },
  ) {
    super(message, options);
    this.name = "ConnectionClosedError";
    this.reason = options?.reason ?? "peer";
  }
}

/**
 * The server sent something that is not valid QMP (bad greeting, garbage, oversize message).
 * Message and excerpt are redacted: what arrived may be a message holding a secret.
 */
export class ProtocolError extends QmpError {
  /** A short, printable excerpt of what arrived, when there is one. */
  readonly received?: string;
  /** Creates a protocol error. */
  constructor(message: string, options?: QmpErrorOptions & { received?: string }) {
    super(redactText(message), options);
    this.name = "ProtocolError";
    this.received = options?.received === undefined ? undefined : redactText(options.received);
  }
}

/**
 * QEMU replied with an error that has no `id`: it failed to parse something it
 * was sent (JSON syntax, nesting or size limits), so it could not tell which
 * request it belonged to.
 */
export class ServerParseError extends ProtocolError {
  /** The QMP error class, usually `GenericError`. */
  readonly class: string;
  /** QEMU's description, e.g. `JSON parse error, expecting value`. */
  readonly desc: string;
  /** Creates an error from an id-less QMP error reply. */
  constructor(errorClass: string, desc: string, options?: QmpErrorOptions) {
    super(
      `QEMU could not parse a request (${errorClass}: ${desc}). ` +
        `This usually means a request exceeded QEMU's JSON limits or was not valid JSON.`,
      { ...options, received: desc },
    );
    this.name = "ServerParseError";
    this.class = errorClass;
    this.desc = desc;
  }
}

/** Capability negotiation (`qmp_capabilities`) failed, or a requested capability is not offered. */
export class NegotiationError extends QmpError {
  /** Creates a negotiation error. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "NegotiationError";
  }
}

/**
 * A command returned `{"error": {"class", "desc"}}`.
 *
 * @example
 * ```ts ignore
 * try {
 *   await qmp.execute("device_del", { id: "nope" });
 * } catch (e) {
 *   if (e instanceof QmpCommandError && e.class === "DeviceNotFound") console.log("already gone");
 * }
 * ```
 */
export class QmpCommandError extends QmpError {
  /** The QMP error class: `GenericError`, `CommandNotFound`, `DeviceNotFound`, ... */
  readonly class: string;
  /** QEMU's human-readable description (secrets redacted). Show it; do not parse it. */
  readonly desc: string;
  /** The command that failed. */
  readonly command: string;
  /** The arguments the command was sent with, secrets redacted (errors get printed). */
  readonly arguments?: unknown;
  /** Creates a command error from a QMP error reply. */
  constructor(
    command: string,
    args: unknown,
    errorClass: string,
    desc: string,
    options?: QmpErrorOptions,
  ) {
    desc = redactText(desc);
    super(`${command} failed: ${desc} (${errorClass})`, options);
    this.name = "QmpCommandError";
    this.class = errorClass;
    this.desc = desc;
    this.command = command;
    this.arguments = args === undefined
      ? undefined
      : redactMessage({ execute: command, arguments: args }).arguments;
  }
}

/** An operation did not finish in time. */
export class TimeoutError extends QmpError {
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;
  /** Creates a timeout error; `what` names the operation ("connect", "query-status", ...). */
  constructor(what: string, timeoutMs: number, options?: QmpErrorOptions & { hint?: string }) {
    super(
      `${what} did not complete within ${formatMs(timeoutMs)}` +
        (options?.hint ? `; ${options.hint}` : ""),
      options,
    );
    this.name = "TimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/** An operation was cancelled through its `AbortSignal`. `cause` is the signal's reason. */
export class AbortError extends QmpError {
  /** Creates an abort error; `what` names the operation that was cancelled. */
  constructor(what: string, options?: QmpErrorOptions) {
    super(`${what} was aborted`, options);
    this.name = "AbortError";
  }
}

/**
 * An `events()` consumer fell behind and its bounded buffer overflowed
 * (with the default `overflow: "error"` policy).
 */
export class EventOverflowError extends QmpError {
  /** How many events were buffered when the overflow happened. */
  readonly bufferSize: number;
  /** Creates an overflow error. */
  constructor(bufferSize: number) {
    super(
      `events() consumer fell more than ${bufferSize} events behind and an event was dropped. ` +
        `Consume events faster, raise bufferSize, or choose overflow: "drop-oldest" or "drop-newest".`,
    );
    this.name = "EventOverflowError";
    this.bufferSize = bufferSize;
  }
}

/**
 * File descriptors cannot be passed: the connection is not a unix socket opened
 * with `{ fdPassing: true }`, Deno lacks `--allow-ffi`, the platform is not Linux,
 * or a descriptor is closed or invalid. Nothing was sent.
 */
export class FdPassingError extends QmpError {
  /** Creates an fd passing error. */
  constructor(message: string, options?: QmpErrorOptions) {
    super(message, options);
    this.name = "FdPassingError";
  }
}

/**
 * A request was refused before sending: its arguments failed validation
 * against the live schema (`validate: true`), or are not a JSON object, or
 * the command name is empty. Nothing was sent.
 *
 * @example
 * ```ts ignore
 * const qmp = await connect(addr, { validate: true });
 * await qmp.executeRaw("device_add", { driver: 5 }); // QmpValidationError: 'driver' ...
 * ```
 */
export class QmpValidationError extends QmpError {
  /** The command whose arguments were invalid. */
  readonly command: string;
  /** Dotted path of the bad member, e.g. `file.filename` (empty for the arguments object). */
  readonly path: string;
  /** Creates a validation error (an empty `command`: the name itself is the problem). */
  constructor(command: string, path: string, problem: string) {
    super(
      command === ""
        ? `Invalid command: ${problem}`
        : `Invalid arguments for ${command}: ${path ? `'${path}' ` : ""}${problem}`,
    );
    this.name = "QmpValidationError";
    this.command = command;
    this.path = path;
  }
}

function formatMs(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/**
 * QEMU could not be started, or exited before its QMP monitor was usable.
 * Carries QEMU's exit status and the tail of its stderr, which usually says why.
 * Secrets in the message, stderr and command line (`-object secret,...,data=`,
 * which QEMU's stderr repeats) are redacted.
 */
export class LaunchError extends QmpError {
  /** QEMU's exit code, when it exited. */
  readonly exitCode?: number;
  /** The signal that ended QEMU, when one did. */
  readonly signal?: string;
  /** The last part of QEMU's stderr. */
  readonly stderr: string;
  /** The command line that was run. */
  readonly commandLine: string[];
  /**
   * Set when QEMU's monitor was not ready within the launch timeout (this many
   * ms) and QEMU was killed for it; `exitCode` and `signal` are then unset.
   */
  readonly timeoutMs?: number;
  /** Creates a launch error. */
  constructor(
    message: string,
    details: {
      exitCode?: number;
      signal?: string;
      stderr?: string;
      commandLine: string[];
      timeoutMs?: number;
    },
    options?: QmpErrorOptions,
  ) {
    const stderr = redactText((details.stderr ?? "").trim());
    message = redactText(message);
    super(stderr ? `${message}\nQEMU stderr:\n${stderr}` : message, options);
    this.name = "LaunchError";
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderr = stderr;
    this.commandLine = redactCommandLine(details.commandLine);
    this.timeoutMs = details.timeoutMs;
  }
}
