/**
 * `connect()`: parses the address, warns about non-loopback ones, dials the
 * transport (with retry and the connect deadline), wraps it in a
 * {@link QmpClient} and runs the handshake; a handshake timeout says whether
 * the connection, the greeting or the negotiation ate the budget.
 *
 * @module
 */
import { type Address, formatAddress, isLoopback, parseAddress } from "./address.ts";
import { formatDuration, parseDuration } from "./duration.ts";
import { AddressError, FdPassingError, QmpError, TimeoutError } from "./errors.ts";
import { openTransport, type Transport } from "./transport.ts";
import type { ConnectOptions } from "./client_options.ts";
import { QmpClient, startHandshake } from "./qmp_client.ts";
import type { HandshakeOutcome } from "./handshake.ts";

/**
 * Connects to a QMP server, reads the greeting and negotiates capabilities.
 *
 * Addresses: `"unix:/path"`, `"tcp:HOST:PORT"`, `"HOST:PORT"`, `"[::1]:PORT"`,
 * `"tls://HOST:PORT"` (with `tls` options), `"ssh://[USER@]HOST[:PORT]/PATH"`
 * (a socket on another host, through the system ssh client: see `ssh`), or an
 * object (`{ transport: "unix", path }`). A bad address throws `AddressError`
 * before any I/O; a TLS or ssh failure is a `TlsError` / `SshError` saying
 * what to fix.
 *
 * @example
 * ```ts ignore
 * await using qmp = await connect("unix:/run/vm1/qmp.sock", { timeout: "5s", retry: true });
 * console.log(qmp.greeting.version.qemu); // { major: 7, minor: 2, micro: 22 }
 * const { status } = await qmp.execute("query-status");
 *
 * await using remote = await connect("tls://vm1.example:4444", {
 *   tls: { caFile: "ca-cert.pem", certFile: "client-cert.pem", keyFile: "client-key.pem" },
 * });
 * ```
 */
export function connect(
  address: string | Address | (ConnectOptions & { address: string | Address }),
  options: ConnectOptions = {},
): Promise<QmpClient> {
  // One object with callbacks, not an async function or a chain: the connect path runs once
  // per connection, and its frames and closures were most of what 1,000 connects at once
  // allocated (see bench/README.md).
  let plan: ConnectPlan;
  try {
    plan = new ConnectPlan(address, options);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => plan.start(resolve, reject));
}

/**
 * One connect: what {@link connect} checked before any I/O (the address, options and
 * deadline), then the dial and the handshake, whose outcome it is (one object per
 * connect, no closures per step).
 */
class ConnectPlan implements HandshakeOutcome {
  readonly opts: ConnectOptions;
  readonly parsed: Address;
  readonly where: string;
  readonly timeoutMs: number;
  readonly deadline: number;
  #resolve: ((client: QmpClient) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  #client: QmpClient | undefined;
  #connectedAt = 0;

  constructor(
    address: string | Address | (ConnectOptions & { address: string | Address }),
    options: ConnectOptions,
  ) {
    let opts = options;
    let addr: string | Address;
    if (typeof address === "object" && address !== null && "address" in address) {
      const { address: a, ...rest } = address;
      addr = a;
      opts = { ...rest, ...options };
    } else {
      addr = address as string | Address;
    }
    const parsed = parseAddress(addr);
    const where = formatAddress(parsed);
    const timeoutMs = opts.timeout === undefined ? 10_000 : parseDuration(opts.timeout);
    if (opts.tls !== undefined && parsed.transport !== "tls") {
      throw new AddressError(addr, "TLS options were given for an address that is not tls://");
    }
    if (parsed.transport === "tcp" && !isLoopback(parsed)) {
      const warning = new QmpError(
        `${where} is not a loopback address; QMP has no authentication or encryption, ` +
          `so anyone who can reach it controls the VM`,
      );
      if (opts.onWarning) opts.onWarning(warning);
      else console.warn(`qmpkit: warning: ${warning.message}`);
    }
    if (opts.fdPassing && parsed.transport !== "unix") {
      throw new FdPassingError(
        `fdPassing needs a unix socket: ${where} is ${
          parsed.transport === "tls" ? "TLS" : "TCP"
        }, which cannot carry file descriptors. ` +
          `Give QEMU a unix socket monitor (-qmp unix:/path,server=on,wait=off).`,
      );
    }
    this.opts = opts;
    this.parsed = parsed;
    this.where = where;
    this.timeoutMs = timeoutMs;
    this.deadline = Date.now() + timeoutMs;
  }

  /** Dials, then runs the handshake; settles the connect's promise once. */
  start(resolve: (client: QmpClient) => void, reject: (error: unknown) => void): void {
    this.#resolve = resolve;
    this.#reject = reject;
    this.open(this.deadline, this.opts.retry, this.opts.signal).then(
      (conn) => this.#handshake(conn),
      reject,
    );
  }

  /** Wraps `conn` in a client and runs the handshake. */
  #handshake(conn: Transport): void {
    let client: QmpClient;
    try {
      client = new QmpClient(
        conn,
        // Object.assign, not a spread: kept for the connection's life, 56 bytes instead of 80.
        Object.assign({}, this.opts, { address: this.where }),
        // Kept for the connection's life: only reconnection needs it.
        this.opts.reconnect
          ? (signal) => this.open(Date.now() + this.timeoutMs, false, signal)
          : undefined,
      );
    } catch (err) {
      try {
        conn.close();
      } catch { /* closed */ }
      this.#reject!(err);
      return;
    }
    this.#client = client;
    this.#connectedAt = Date.now();
    startHandshake(
      client as QmpClient<unknown>,
      Math.max(1, this.deadline - Date.now()),
      this.opts.signal,
      this,
    );
  }

  /** The greeting did not come: {@link failed} closes the client. */
  gaveUp(): void {}

  /** Handshake done: the connect resolves with the client. */
  done(): void {
    this.#resolve!(this.#client!);
  }

  /** Handshake failed: the client is closed, and the connect rejects saying why. */
  failed(err: unknown): void {
    const client = this.#client!;
    const report = () => this.#reject!(this.handshakeError(client, this.#connectedAt, err));
    client.close().then(report, report);
  }

  /** Dials the address (the first connect, and each reconnect). */
  open(deadline: number, retry: boolean | undefined, signal: AbortSignal | undefined) {
    const o = {
      deadline,
      timeoutMs: this.timeoutMs,
      signal,
      retry,
      tls: this.opts.tls,
      ssh: this.opts.ssh,
    };
    // The FFI transport is imported only when asked for (a plain connect does not load it).
    const parsed = this.parsed;
    return this.opts.fdPassing && parsed.transport === "unix"
      ? import("./transports/unix_fd.ts").then((m) => m.openUnixFdTransport(parsed, o))
      : openTransport(this.parsed, o);
  }

  /** The error a failed handshake is reported as. */
  handshakeError(client: QmpClient, connectedAt: number, err: unknown): unknown {
    if (!(err instanceof TimeoutError)) return err;
    const connected = connectedAt - (this.deadline - this.timeoutMs);
    return new TimeoutError(`Connecting to ${this.where}`, this.timeoutMs, {
      cause: err,
      hint: handshakeTimeoutHint(client, connected, err) +
        (this.parsed.transport === "tcp"
          ? `; a TLS monitor (tls-creds=...) says nothing to a plain client: use tls://`
          : ""),
    });
  }
}

/**
 * Why a connect that reached the server timed out: no greeting (the monitor
 * is busy, or not QMP), or no reply to `qmp_capabilities`. `connectMs` is
 * how long the connection itself took.
 */
function handshakeTimeoutHint(client: QmpClient, connectMs: number, err: TimeoutError): string {
  let greeted = true;
  try {
    client.greeting;
  } catch {
    greeted = false;
  }
  if (greeted) return `the greeting came, but ${err.message}`;
  const left = formatDuration(err.timeoutMs);
  if (connectMs > err.timeoutMs) {
    // The connection itself ate the budget: blaming the greeting would be wrong.
    return `the connection timed out: it took ${formatDuration(connectMs)} to be accepted, ` +
      `leaving ${left} for the QMP greeting. The server is slow to accept connections (its ` +
      `queue is full, as when a QMP monitor is busy with another client): allow a longer timeout`;
  }
  const after = connectMs >= 100 ? ` after ${formatDuration(connectMs)}` : "";
  return `connected${after}, but no QMP greeting came in ${left}: ` +
    `the monitor is busy (another client is connected, and QMP serves one client at a time), ` +
    `or this is not a QMP socket`;
}
