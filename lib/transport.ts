/**
 * Byte transports: the minimal connection interface the client needs, and
 * opening one (unix, TCP; TLS in lib/tls_transport.ts, `ssh://` in
 * lib/ssh_transport.ts, libvirt domains in lib/transports/libvirt.ts) with a
 * deadline, cancellation and retry.
 *
 * @module
 */
import { type Address, formatAddress } from "./address.ts";
import { AbortError, ConnectionError, MonitorBusyError, TimeoutError, TlsError } from "./errors.ts";
import { scheduleTimeout } from "./timer_lanes.ts";
// Types only: the ssh, TLS and libvirt transports are imported when an address needs
// them, so a unix or TCP client (a one-shot `qmp exec`) does not load them.
import type { SshOptions } from "./ssh_transport.ts";
import type { TlsOptions } from "./tls_transport.ts";

/**
 * A bidirectional byte stream. `Deno.Conn` satisfies it; tests can supply an
 * in-memory implementation.
 */
export interface Transport {
  /** Reads into `p`; resolves to the number of bytes read, or `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
  /** Closes the stream; pending reads end. */
  close(): void;
}

/** A {@link Transport} that can also send file descriptors with its bytes. */
export interface FdTransport extends Transport {
  /**
   * Writes some of `p` with `fds` attached to its first byte (`SCM_RIGHTS`);
   * resolves to the number of bytes written (at least 1: the descriptors went
   * with them). The rest is written with {@link Transport.write}.
   */
  writeWithFds(p: Uint8Array, fds: readonly number[]): Promise<number>;
}

/** True when `t` can pass file descriptors. */
export function isFdTransport(t: Transport): t is FdTransport {
  return typeof (t as Partial<FdTransport>).writeWithFds === "function";
}

/** Options for {@link openTransport}. */
export interface OpenOptions {
  /** Absolute deadline (ms since epoch, `Date.now()` scale). */
  deadline: number;
  /** The timeout the deadline came from, for error messages. */
  timeoutMs: number;
  /** Cancels the attempt. */
  signal?: AbortSignal;
  /** Keep retrying "no such socket" / "connection refused" until the deadline. */
  retry?: boolean;
  /** Certificates and checks for a `tls://` address. */
  tls?: TlsOptions;
  /** How to run ssh, for `ssh://` addresses. */
  ssh?: SshOptions;
  /**
   * What the stream will carry (default `"qmp"`). Sockets carry either; a libvirt
   * address needs it, since libvirt passes QMP and the guest agent through separately.
   */
  purpose?: "qmp" | "agent";
}

const RETRYABLE = new Set(["NotFound", "ConnectionRefused", "ConnectionReset"]);

/**
 * Connects to a unix, TCP, TLS or ssh address, or a libvirt domain. With
 * `retry`, a missing socket or a refused connection (QEMU still starting; for
 * libvirt, a domain not defined or not running yet) is retried with a short
 * backoff until the deadline. Errors are {@link ConnectionError} (a path that
 * is not a socket says so; a {@link TlsError} when TLS fails, an `SshError`
 * for ssh, a `LibvirtError` for libvirt), {@link MonitorBusyError} (a unix
 * monitor whose connection queue is full: another client is attached),
 * {@link TimeoutError} (a TCP connection nothing accepts) or {@link AbortError}.
 */
export function openTransport(address: Address, options: OpenOptions): Promise<Transport> {
  if (address.transport === "unix" && !options.signal && options.deadline - Date.now() > 0) {
    // The common case, without an async frame per connect (memory per connection, see
    // bench/README.md): a unix connect never waits, it succeeds or fails at once (EAGAIN when
    // the monitor's queue is full, see tests/cli_connect_errors_test.ts), so no timer races
    // it. A failure goes through the full path below (retry, busy, not a socket).
    let pending: Promise<Transport>;
    try {
      pending = Deno.connect({ transport: "unix", path: address.path });
    } catch (err) {
      return dial(address, options, err);
    }
    return pending.catch((err) => dial(address, options, err));
  }
  return dial(address, options, undefined);
}

/** Dials with retry until the deadline; `first` is the error of an attempt already made. */
async function dial(
  address: Address,
  options: OpenOptions,
  first: unknown,
): Promise<Transport> {
  if (address.transport === "ssh") {
    const { openSshTransport } = await import("./ssh_transport.ts");
    return await openSshTransport(address, options);
  }
  if (address.transport === "libvirt") {
    const { LibvirtAgentTransport, LibvirtQmpTransport } = await import(
      "./transports/libvirt.ts"
    );
    return options.purpose === "agent"
      ? await LibvirtAgentTransport.open(address, options)
      : await LibvirtQmpTransport.open(address, options);
  }
  const where = formatAddress(address);
  let delay = 10;
  let lastError: unknown;
  for (let attempt = 1;; attempt++) {
    if (options.signal?.aborted) throw new AbortError(`Connecting to ${where}`);
    if (lastError !== undefined && options.deadline - Date.now() <= 0) {
      throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs, {
        cause: lastError,
        hint: `gave up after ${attempt - 1} attempts (last: ${describeOsError(lastError)})`,
      });
    }
    try {
      if (first !== undefined) throw first;
      return await connectOnce(address, options);
    } catch (err) {
      first = undefined;
      if (err instanceof TimeoutError || err instanceof AbortError || err instanceof TlsError) {
        throw err;
      }
      const kind = err instanceof Error ? err.name : "";
      if (address.transport === "unix") {
        // EAGAIN: QEMU accepts no connection while a client is attached, so the queue filled up.
        if (isBusy(err)) throw new MonitorBusyError(where, { cause: err });
        // A regular file or a directory refuses too: say what the path is instead.
        const notSocket = isRefused(err) ? await describeNonSocket(address.path) : undefined;
        if (notSocket !== undefined) {
          throw new ConnectionError(
            `Cannot connect to ${where}: ${address.path} is ${notSocket}, not a socket. ` +
              `Give the path of QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off).`,
            { cause: err, address: where },
          );
        }
      }
      const remaining = options.deadline - Date.now();
      if (options.retry && RETRYABLE.has(kind) && remaining > 0) {
        lastError = err;
        await sleep(Math.min(delay, remaining), options.signal, where);
        delay = Math.min(delay * 2, 200);
        continue;
      }
      if (options.retry && RETRYABLE.has(kind)) {
        throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs, {
          cause: err,
          hint: `gave up after ${attempt} attempts (last: ${describeOsError(err)})`,
        });
      }
      throw new ConnectionError(
        `Cannot connect to ${where}: ${describeOsError(err)}. ${hintFor(kind, address)}`,
        { cause: err, address: where },
      );
    }
  }
}

async function connectOnce(
  address: Exclude<Address, { transport: "ssh" | "libvirt" }>,
  options: OpenOptions,
): Promise<Transport> {
  if (address.transport === "tls") {
    const { openTlsTransport } = await import("./tls_transport.ts");
    return await openTlsTransport(address, options.tls ?? {}, options);
  }
  const where = formatAddress(address);
  const remaining = options.deadline - Date.now();
  if (remaining <= 0) throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs);
  if (address.transport === "unix" && !options.signal) {
    // A unix connect never waits (see openTransport). So no timer to race it: one per
    // connection cost ~1.6 KiB of garbage.
    return await Deno.connect({ transport: "unix", path: address.path });
  }
  // A timeout cancelled once connected, on the shared timer lanes (not a signal per connect,
  // which would stay alive for the whole connect timeout after it succeeded).
  const timeoutController = new AbortController();
  const timeout = timeoutController.signal;
  const timer = scheduleTimeout(remaining, { timedOut: () => timeoutController.abort() });
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const pending = address.transport === "unix"
    ? Deno.connect({ transport: "unix", path: address.path })
    : Deno.connect({ hostname: address.hostname, port: address.port, signal });
  // Unix connect takes no signal: race it, and close a connection that wins too late.
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      pending.then((c) => c.close(), () => {});
      reject(
        timeout.aborted
          ? connectTimedOut(address, options.timeoutMs)
          : new AbortError(`Connecting to ${where}`, { cause: options.signal?.reason }),
      );
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([pending, aborted]);
  } catch (err) {
    // Deno's TCP connect rejects with its own AbortError when the signal fires.
    if (signal.aborted && !(err instanceof TimeoutError || err instanceof AbortError)) {
      throw timeout.aborted
        ? connectTimedOut(address, options.timeoutMs, err)
        : new AbortError(`Connecting to ${where}`, { cause: options.signal?.reason });
    }
    throw err;
  } finally {
    timer.cancel();
    signal.removeEventListener("abort", onAbort!);
    aborted.catch(() => {});
  }
}

/** The connection itself (not the greeting) did not complete in time. */
function connectTimedOut(address: Address, timeoutMs: number, cause?: unknown): TimeoutError {
  const where = formatAddress(address);
  const hint = address.transport === "tcp"
    ? `the connection timed out: nothing accepted the TCP connection (the listener's queue is ` +
      `full, as when a QMP monitor is busy with another client, or packets are dropped on the ` +
      `way). Check that QEMU is running, the address is right and no other client is attached.`
    : "the connection timed out";
  return new TimeoutError(`Connecting to ${where}`, timeoutMs, { cause, hint });
}

function errorCode(err: unknown): unknown {
  return (err as { code?: unknown } | null)?.code;
}

function isBusy(err: unknown): boolean {
  return (err instanceof Error && err.name === "WouldBlock") || errorCode(err) === "EAGAIN";
}

function isRefused(err: unknown): boolean {
  return (err instanceof Error && err.name === "ConnectionRefused") ||
    errorCode(err) === "ECONNREFUSED" || errorCode(err) === "ENOTSOCK";
}

/**
 * What is at `path` when it is not a socket ("a regular file", "a
 * directory", ...); undefined when it is a socket or cannot be examined.
 */
async function describeNonSocket(path: string): Promise<string | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return undefined;
  }
  if (info.isSocket) return undefined;
  if (info.isFile) return "a regular file";
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  return info.isSocket === null ? undefined : "not a socket";
}

function sleep(ms: number, signal: AbortSignal | undefined, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = scheduleTimeout(ms, {
      timedOut: () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
    });
    const onAbort = () => {
      timer.cancel();
      reject(new AbortError(`Connecting to ${where}`, { cause: signal?.reason }));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function describeOsError(err: unknown): string {
  if (err instanceof Error) return err.message.replace(/ \(os error \d+\)$/, "");
  return String(err);
}

function hintFor(kind: string, address: Address): string {
  switch (kind) {
    case "NotFound":
      return "No socket exists at that path: is QEMU running with " +
        `-qmp unix:${address.transport === "unix" ? address.path : "PATH"},server=on,wait=off? ` +
        "Pass retry: true to wait for a QEMU that is still starting.";
    case "ConnectionRefused":
      return address.transport === "unix"
        ? "Nothing is listening on that socket (a QEMU that exited can leave it behind): " +
          "check that QEMU is running and the path is right."
        : "Nothing is listening there: check that QEMU is running and the address is right.";
    case "PermissionDenied":
    case "NotCapable":
      return "Permission denied: check the socket's permissions and the Deno flags " +
        "(--allow-read --allow-write --allow-net for unix sockets).";
    default:
      return "Check that QEMU is running and the address is right.";
  }
}
