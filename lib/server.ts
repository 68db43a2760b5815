/**
 * Accept mode: qmpkit listens and QEMU dials in (`-qmp unix:/path` without
 * `server=on`, or `-chardev socket,path=...,server=off -mon chardev=...,mode=control`).
 * Nothing polls for a socket QEMU has not created yet, and a QEMU that dies
 * before its monitor is up can be raced against `accept()`.
 *
 * @module
 */
import {
  type Address,
  formatAddress,
  isLoopback,
  parseAddress,
  type TcpAddress,
  type UnixAddress,
} from "./address.ts";
import { type ClientOptions, QmpClient } from "./client.ts";
import { boundedWait } from "./deadline.ts";
import { type Duration, parseDuration } from "./duration.ts";
import { AbortError, AddressError, ConnectionError } from "./errors.ts";

/** Options of {@link listen}: the client options every accepted connection gets. */
export type ServerOptions = Omit<ClientOptions, "reconnect" | "address">;

/** Options of {@link QmpServer.accept}. */
export interface AcceptOptions {
  /**
   * Deadline for a QEMU to connect, greet and negotiate together (default: none,
   * wait until `signal` or {@link QmpServer.close}).
   */
  timeout?: Duration;
  /** Cancels the wait with an {@link AbortError}. */
  signal?: AbortSignal;
}

/**
 * A listening QMP endpoint (from {@link listen}). Each {@link accept} yields one
 * negotiated {@link QmpClient} for one QEMU; call it again for the next QEMU.
 * Closing the server removes its unix socket file; clients already accepted
 * stay open.
 *
 * @example
 * ```ts ignore
 * await using server = await listen("unix:/tmp/vm1.qmp");
 * const qemu = new Deno.Command("qemu-system-x86_64", {
 *   args: ["-machine", "none", "-display", "none", "-qmp", `unix:${server.path}`],
 * }).spawn();
 * await using qmp = await server.accept({ timeout: "10s" });
 * await qmp.execute("quit");
 * await qemu.status;
 * ```
 */
export class QmpServer implements AsyncDisposable {
  /** The bound address; for TCP with port 0, the port the kernel chose. */
  readonly address: UnixAddress | TcpAddress;
  readonly #listener: Deno.Listener;
  readonly #options: ServerOptions;
  /** One `accept` op at most; a wait that gave up leaves it for the next caller. */
  #pendingAccept: Promise<Deno.Conn> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  /** @internal Use {@link listen}. */
  constructor(
    listener: Deno.Listener,
    address: UnixAddress | TcpAddress,
    options: ServerOptions,
  ) {
    this.#listener = listener;
    this.address = address;
    this.#options = options;
  }

  /** The unix socket path QEMU should dial (`undefined` for TCP). */
  get path(): string | undefined {
    return this.address.transport === "unix" ? this.address.path : undefined;
  }

  /**
   * The argument of `-qmp` that makes QEMU dial this server: `unix:/path` or
   * `tcp:127.0.0.1:PORT` (QEMU's client mode is the default without `server=on`).
   */
  get qemuArg(): string {
    return formatAddress(this.address);
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Waits for the next QEMU to connect, then reads its greeting and negotiates.
   * Throws `TimeoutError` / {@link AbortError} per `options`,
   * {@link ConnectionError} when the server is (or gets) closed, and the
   * handshake's errors (`NegotiationError`, `ProtocolError`) when the peer is
   * not a QMP server; that connection is closed, the server keeps listening.
   */
  async accept(options: AcceptOptions = {}): Promise<QmpClient> {
    const where = formatAddress(this.address);
    const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout);
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    if (this.#closed) throw this.#closedError(where);
    if (options.signal?.aborted) {
      throw new AbortError(`Waiting for QEMU on ${where}`, { cause: options.signal.reason });
    }
    this.#pendingAccept ??= this.#listener.accept();
    const pending = this.#pendingAccept;
    const conn = await boundedWait<Deno.Conn>(
      `Waiting for QEMU to connect to ${where}`,
      { timeout: timeoutMs, signal: options.signal },
      (resolve, reject) => {
        // A wait that gives up leaves the accept (and a connection it brings) to the next one.
        let waiting = true;
        pending.then((c) => {
          if (!waiting) return;
          if (this.#pendingAccept === pending) this.#pendingAccept = undefined;
          resolve(c);
        }, (err) => {
          if (this.#pendingAccept === pending) this.#pendingAccept = undefined;
          if (waiting) reject(this.#closed ? this.#closedError(where) : err);
        });
        return () => (waiting = false);
      },
      {
        hint: () =>
          `start QEMU with -qmp ${this.qemuArg} (no server=on), or ` +
          `-chardev socket,id=mon0,${this.#chardevAddress()} -mon chardev=mon0,mode=control`,
      },
    );
    if (this.#closed) {
      // The server closed while the connection was being handed over.
      conn.close();
      throw this.#closedError(where);
    }
    const client = new QmpClient(conn, { ...this.#options, address: `${where} (accepted)` });
    try {
      await client.handshake({
        timeout: deadline === undefined ? "10s" : Math.max(1, deadline - Date.now()),
        signal: options.signal,
      });
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  /**
   * Stops listening and removes the unix socket file. A pending {@link accept}
   * rejects with {@link ConnectionError}. Accepted clients are not closed.
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Closes the server (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    // The accept op settles once the listener is closed; a connection that won the race is dropped.
    await this.#pendingAccept?.then((c) => c.close(), () => {});
    if (this.address.transport === "unix") {
      await Deno.remove(this.address.path).catch(() => {});
    }
  }

  #closedError(where: string): ConnectionError {
    return new ConnectionError(`The QMP server on ${where} is closed: nothing more to accept`, {
      address: where,
    });
  }

  #chardevAddress(): string {
    const a = this.address;
    return a.transport === "unix"
      ? `path=${a.path},server=off`
      : `host=${a.hostname},port=${a.port},server=off`;
  }
}

/**
 * Listens on a unix socket or a loopback TCP address for QEMUs that dial in.
 * `tcp:127.0.0.1:0` picks a free port (see {@link QmpServer.address}). An
 * existing file at a unix path is an error (nothing is deleted that this call
 * did not create); put the socket in a private directory.
 * Non-loopback TCP addresses are refused: QMP has no authentication.
 *
 * @example
 * ```ts ignore
 * await using server = await listen("tcp:127.0.0.1:0");
 * // qemu-system-x86_64 ... -qmp tcp:127.0.0.1:PORT   (server.qemuArg)
 * await using qmp = await server.accept({ timeout: "10s" });
 * ```
 */
export function listen(
  address: string | Address,
  options: ServerOptions = {},
): Promise<QmpServer> {
  try {
    return Promise.resolve(listenNow(address, options));
  } catch (err) {
    return Promise.reject(err);
  }
}

function listenNow(address: string | Address, options: ServerOptions): QmpServer {
  const parsed = parseListenAddress(address);
  const where = formatAddress(parsed);
  if (!isLoopback(parsed)) {
    throw new AddressError(
      address,
      "listen() binds loopback addresses only (QMP has no authentication or encryption); " +
        "use 127.0.0.1, ::1 or a unix socket",
    );
  }
  let listener: Deno.Listener;
  try {
    listener = parsed.transport === "unix"
      ? Deno.listen({ transport: "unix", path: parsed.path })
      : Deno.listen({ transport: "tcp", hostname: parsed.hostname, port: parsed.port });
  } catch (cause) {
    const kind = cause instanceof Error ? cause.name : "";
    const hint = kind === "AddrInUse"
      ? parsed.transport === "unix"
        ? "a file already exists at that path: remove it or pick another path"
        : "the port is taken: pick another, or port 0 for a free one"
      : kind === "NotCapable" || kind === "PermissionDenied"
      ? "check the Deno flags (--allow-read --allow-write for unix sockets, --allow-net for TCP)"
      : "check the address";
    throw new ConnectionError(
      `Cannot listen on ${where}: ${cause instanceof Error ? cause.message : cause}; ${hint}`,
      { cause, address: where },
    );
  }
  const bound: Address = parsed.transport === "tcp"
    ? { ...parsed, port: (listener.addr as Deno.NetAddr).port }
    : parsed;
  return new QmpServer(listener, bound, options);
}

/** Like `parseAddress`, but port 0 ("any free port") is allowed. */
function parseListenAddress(address: string | Address): UnixAddress | TcpAddress {
  if (typeof address === "string" && /:0$/.test(address.trim()) && !isUnixString(address)) {
    const parsed = parseAddress(address.trim().replace(/:0$/, ":1"));
    if (parsed.transport === "tcp") return { ...parsed, port: 0 };
  }
  if (typeof address === "object" && address?.transport === "tcp" && address.port === 0) {
    return { ...parseAddress({ ...address, port: 1 }), port: 0 } as TcpAddress;
  }
  const parsed = parseAddress(address);
  if (parsed.transport !== "unix" && parsed.transport !== "tcp") {
    throw new AddressError(
      address,
      `listen() takes a unix socket or a loopback TCP address, not a ${parsed.transport} one`,
    );
  }
  return parsed;
}

function isUnixString(s: string): boolean {
  const t = s.trim();
  return t.startsWith("unix:") || (!t.startsWith("tcp:") && t.includes("/"));
}
