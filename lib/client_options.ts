/**
 * The client's public option and value types: what `connect()` and
 * `QmpClient` accept (options, per-call options, the reconnect policy) and
 * hand out (typed events, transcript entries, states).
 *
 * @module
 */
import type { Duration } from "./duration.ts";
import type { ConnectionClosedError, QmpError } from "./errors.ts";
import type { EventWhere } from "./events.ts";
import type { FdSource } from "./fd_passing.ts";
import type { Greeting, QmpEvent } from "./protocol.ts";
import type { SshOptions } from "./ssh_transport.ts";
import type { TlsOptions } from "./tls_transport.ts";
import type { CommandArgs, CommandName, EventName, QmpEvents } from "./qapi/types.ts";

/** A typed event: `event` is the name, `data` its payload type. */
export type TypedEvent<N extends EventName = EventName> = N extends EventName
  ? QmpEvent<N, QmpEvents[N]>
  : never;

/**
 * The rest parameters of `execute`: arguments are optional when the command
 * has no required member, then per-call options.
 */
export type ExecuteRest<K extends CommandName> = Record<never, never> extends CommandArgs<K>
  ? [args?: CommandArgs<K>, options?: ExecuteOptions]
  : [args: CommandArgs<K>, options?: ExecuteOptions];

/** One message sent or received, as given to the `transcript` hook. */
export interface TranscriptEntry {
  /** When the message was sent or parsed. */
  time: Date;
  /** `"send"` for client → QEMU, `"recv"` for QEMU → client. */
  direction: "send" | "recv";
  /** The message object. */
  message: Record<string, unknown>;
}

/** Options of a client connection (shared by {@link connect} and {@link QmpClient}). */
export interface ClientOptions {
  /** Run `qmp_capabilities` after the greeting (default `true`). */
  negotiate?: boolean;
  /** Ask for the `oob` capability during negotiation; fails if the server does not offer it. */
  oob?: boolean;
  /** Largest accepted message in bytes (default 10 MiB). */
  maxMessageSize?: number;
  /** Default timeout of every command (default: none; a closed connection still ends it). */
  commandTimeout?: Duration;
  /** How many recent events are kept for `waitEvent(..., { since })` (default 256). */
  historySize?: number;
  /**
   * Called with every message sent and received, e.g. to record a transcript.
   * Secrets (passwords, `secret` objects' data, their `qom-get`/`qom-set`,
   * HMP forms; see `lib/redact.ts`) are replaced by `"<redacted>"` unless
   * `redact: false`; ids of secret objects (`key-secret`) are kept.
   */
  transcript?: (entry: TranscriptEntry) => void;
  /** Redact secrets in transcript entries (default `true`). */
  redact?: boolean;
  /**
   * Called with protocol anomalies that do not end the connection: a reply with
   * an unknown id, or an id-less error QEMU could not attribute. Default: print
   * to stderr.
   */
  onWarning?: (warning: QmpError) => void;
  /**
   * Check every command's arguments against the server's own schema
   * (`query-qmp-schema`, fetched once) before sending; bad arguments reject
   * with `QmpValidationError` naming the member, and nothing is sent.
   */
  validate?: boolean;
  /**
   * Reconnect when the server goes away (see {@link ReconnectPolicy}). Only
   * clients made by {@link connect} can reconnect.
   */
  reconnect?: boolean | ReconnectPolicy;
  /** Human-readable address for messages (set by {@link connect}). */
  address?: string;
}

/** Options of {@link connect}. */
export interface ConnectOptions extends ClientOptions {
  /** Deadline for connecting, greeting and negotiation together (default `"10s"`). */
  timeout?: Duration;
  /** Cancels connecting. */
  signal?: AbortSignal;
  /**
   * Retry while the socket does not exist yet or refuses connections, until `timeout`. A path
   * that is not a socket, or a busy monitor (`MonitorBusyError`), still fails at once.
   */
  retry?: boolean;
  /**
   * Certificates for a `tls://HOST:PORT` address (QEMU's `tls-creds-x509`):
   * the CA, a client certificate and key when the monitor has
   * `verify-peer=on`. Only valid with a `tls://` address.
   */
  tls?: TlsOptions;
  /**
   * Open the unix socket through libc (FFI) so commands can pass file descriptors
   * (`execute(cmd, args, { fds })`). Needs `--allow-ffi`; unix sockets only.
   */
  fdPassing?: boolean;
  /**
   * How to run the system `ssh` for `ssh://` addresses: a config file, a key,
   * more options, the program (see {@link SshOptions}).
   */
  ssh?: SshOptions;
}

/** Per-command options. */
export interface ExecuteOptions {
  /** Reject with {@link TimeoutError} after this long. A late reply is then discarded. */
  timeout?: Duration;
  /** Reject with {@link AbortError} when aborted. The command may still run in QEMU. */
  signal?: AbortSignal;
  /**
   * File descriptors sent with the command (`SCM_RIGHTS`), for `getfd` and `add-fd`
   * (QEMU takes the first one). Needs a client made by `connect(addr, { fdPassing: true })`;
   * otherwise the command fails with `FdPassingError` and nothing is sent. Commands with
   * fds go one at a time (each waits for the previous one's reply), so QEMU cannot pair a
   * command with another one's descriptor. QEMU gets copies: close yours when convenient.
   */
  fds?: readonly FdSource[];
}

/** Options of {@link QmpClient.waitEvent}. */
export interface WaitEventOptions<E extends QmpEvent = QmpEvent> {
  /** Only accept events matching this predicate or partial `data` pattern. */
  where?: EventWhere<E>;
  /** Reject with {@link TimeoutError} after this long. */
  timeout?: Duration;
  /** Reject with {@link AbortError} when aborted. */
  signal?: AbortSignal;
  /**
   * Also accept a matching event that already arrived after this mark (from
   * {@link QmpClient.mark}), from the client's recent-event history.
   */
  since?: number;
}

/**
 * Connection states: waiting for the greeting, usable, re-establishing a
 * dropped connection (with a `reconnect` policy), or closed for good.
 */
export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * Opt-in reconnection for long-running watchers: when the server goes away
 * (EOF or reset, not `quit` or `close()`), the client dials again with
 * exponential backoff. Commands in flight at the drop fail with
 * `ConnectionClosedError` and are never re-sent; commands issued while
 * reconnecting fail at once; event listeners stay registered and keep
 * receiving events from the new connection.
 */
export interface ReconnectPolicy {
  /** Attempts before giving up and closing for good (default 10). */
  maxTries?: number;
  /** Delay before the first attempt (default `"100ms"`); doubles each time. */
  initialDelay?: Duration;
  /** Upper bound of the delay (default `"5s"`). */
  maxDelay?: Duration;
  /** How long a fresh connection may take to greet and negotiate (default `"10s"`). */
  handshakeTimeout?: Duration;
  /** Called when the connection dropped and reconnection starts. */
  onDisconnect?: (error: ConnectionClosedError) => void;
  /** Called after a successful reconnect (greeting read, negotiated). */
  onReconnect?: (info: { attempt: number; greeting: Greeting }) => void;
}
