/**
 * A unix socket transport that can attach file descriptors to what it writes
 * (`SCM_RIGHTS`), for QEMU's `getfd` and `add-fd`. Deno's own unix sockets
 * cannot send ancillary data, so this one is libc through FFI (`--allow-ffi`);
 * it is used only when a caller asks for it (`connect(addr, { fdPassing: true })`).
 *
 * How it reads without blocking Deno's event loop: the socket is non-blocking
 * (`SOCK_NONBLOCK`), so `recv`/`sendmsg` run on the main thread and return at
 * once (`EAGAIN` when there is nothing to do, with `errno` read on the same
 * thread). Only the wait for readiness, `poll()`, is a `nonblocking: true` FFI
 * call, run on Deno's blocking thread pool: no timer polling, no latency added,
 * no CPU spent while idle. `close()` calls `shutdown(SHUT_RDWR)`, which wakes a
 * pending `poll()` at once (it reports POLLHUP); the descriptor itself is
 * closed only after every in-flight call has returned, so its number cannot be
 * reused under a thread still polling it. Every op therefore ends with
 * `close()`: test sanitizers see no leaked op or resource.
 *
 * @module
 */
import type { UnixAddress } from "../address.ts";
import { AbortError, ConnectionError, FdPassingError, TimeoutError } from "../errors.ts";
import { acquireLibc, C, type LibcRef, osError } from "../libc_ffi.ts";
import type { FdTransport } from "../transport.ts";

/** Longest unix socket path (`sizeof(sun_path)` is 108, with the final NUL). */
const SUN_PATH_MAX = 107;

/** The FFI unix socket; see the module doc. */
export class UnixFdTransport implements FdTransport {
  readonly #fd: number;
  readonly #libc: LibcRef;
  #closed = false;
  #fdClosed = false;
  #inFlight = 0;
  /**
   * `struct pollfd` of the reader and of the writer. Fields, not locals: the kernel writes
   * `revents` from another thread, so the memory must live as long as the transport.
   */
  readonly #pollIn = new DataView(new ArrayBuffer(8));
  readonly #pollOut = new DataView(new ArrayBuffer(8));

  /** @internal Use {@link openUnixFdTransport}. */
  constructor(fd: number, libc: LibcRef) {
    this.#fd = fd;
    this.#libc = libc;
    for (const [pfd, events] of [[this.#pollIn, C.POLLIN], [this.#pollOut, C.POLLOUT]] as const) {
      pfd.setInt32(0, fd, true); // struct pollfd { int fd; short events, revents; }
      pfd.setInt16(4, events, true);
    }
  }

  /** Reads into `p`; `null` at end of stream or once closed. */
  async read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return null;
    this.#inFlight++;
    try {
      while (true) {
        if (this.#closed) return null;
        const n = Number(this.#libc.sym.recv(this.#fd, p, BigInt(p.length), C.MSG_DONTWAIT));
        if (n > 0) return n;
        if (n === 0) return null;
        const errno = this.#libc.errno();
        if (errno === C.EINTR) continue;
        if (errno !== C.EAGAIN) throw osError(this.#libc, errno, "recv on the QMP socket");
        await this.#libc.sym.poll(this.#pollIn, 1n, -1);
      }
    } finally {
      this.#inFlight--;
      this.#release();
    }
  }

  /** Writes some of `p`; resolves to the number of bytes written. */
  write(p: Uint8Array): Promise<number> {
    return this.writeWithFds(p, []);
  }

  /** See {@link FdTransport.writeWithFds}. */
  async writeWithFds(p: Uint8Array, fds: readonly number[]): Promise<number> {
    if (this.#closed) throw new Deno.errors.BadResource("The QMP socket is closed");
    if (p.length === 0) return 0;
    const iov = new BigUint64Array([ptr(p), BigInt(p.length)]);
    const msg = new DataView(new ArrayBuffer(56)); // struct msghdr (LP64)
    msg.setBigUint64(16, ptr(iov), true); // msg_iov
    msg.setBigUint64(24, 1n, true); // msg_iovlen
    let control: Uint8Array | undefined;
    if (fds.length > 0) {
      // struct cmsghdr { size_t len; int level; int type; } then the ints, padded to 8.
      const dataLen = 4 * fds.length;
      control = new Uint8Array(16 + ((dataLen + 7) & ~7));
      const cm = new DataView(control.buffer);
      cm.setBigUint64(0, BigInt(16 + dataLen), true);
      cm.setInt32(8, C.SOL_SOCKET, true);
      cm.setInt32(12, C.SCM_RIGHTS, true);
      fds.forEach((fd, i) => cm.setInt32(16 + 4 * i, fd, true));
      msg.setBigUint64(32, ptr(control), true); // msg_control
      msg.setBigUint64(40, BigInt(control.length), true); // msg_controllen
    }
    this.#inFlight++;
    try {
      while (true) {
        if (this.#closed) throw new Deno.errors.BadResource("The QMP socket is closed");
        const n = Number(
          this.#libc.sym.sendmsg(this.#fd, msg, C.MSG_DONTWAIT | C.MSG_NOSIGNAL),
        );
        if (n >= 0) return n;
        const errno = this.#libc.errno();
        if (errno === C.EINTR) continue;
        if (errno === C.EAGAIN) {
          await this.#libc.sym.poll(this.#pollOut, 1n, -1);
          continue;
        }
        if (errno === 9 /* EBADF: a descriptor in fds */ && fds.length > 0) {
          throw new FdPassingError(
            `Cannot pass descriptors [${fds.join(", ")}]: one of them is not open`,
          );
        }
        throw osError(this.#libc, errno, "sendmsg on the QMP socket");
      }
    } finally {
      this.#inFlight--;
      this.#release();
      // msg holds raw pointers to these: keep them alive across the waits above.
      void iov, control;
    }
  }

  /** Closes the socket: a pending read ends with `null`, a pending write fails. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#libc.sym.shutdown(this.#fd, C.SHUT_RDWR); // wakes a pending poll()
    this.#release();
  }

  /** Closes the descriptor once closed and no call uses it any more. */
  #release(): void {
    if (!this.#closed || this.#inFlight > 0 || this.#fdClosed) return;
    this.#fdClosed = true;
    this.#libc.sym.close(this.#fd);
    this.#libc.release();
  }
}

function ptr(view: ArrayBufferView): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view as Uint8Array)));
}

/** Options of {@link openUnixFdTransport} (those of `openTransport`). */
export interface OpenUnixFdOptions {
  /** Absolute deadline (ms since epoch). */
  deadline: number;
  /** The timeout the deadline came from, for error messages. */
  timeoutMs: number;
  /** Cancels the attempt. */
  signal?: AbortSignal;
  /** Keep retrying a missing socket or a refused connection until the deadline. */
  retry?: boolean;
}

/**
 * Connects an FFI unix socket to `address`. A full accept queue (`EAGAIN`) is
 * retried until the deadline, like a missing socket or a refused connection
 * with `retry`. Errors: {@link FdPassingError} (no `--allow-ffi`, path too
 * long), {@link ConnectionError}, {@link TimeoutError}, {@link AbortError}.
 */
export async function openUnixFdTransport(
  address: UnixAddress,
  options: OpenUnixFdOptions,
): Promise<UnixFdTransport> {
  const where = `unix:${address.path}`;
  const pathBytes = new TextEncoder().encode(address.path);
  if (pathBytes.length > SUN_PATH_MAX) {
    throw new FdPassingError(
      `Cannot connect to ${where}: the path is ${pathBytes.length} bytes, a unix socket path ` +
        `holds at most ${SUN_PATH_MAX}; use a shorter path`,
    );
  }
  const sockaddr = new Uint8Array(110); // struct sockaddr_un
  new DataView(sockaddr.buffer).setUint16(0, C.AF_UNIX, true);
  sockaddr.set(pathBytes, 2);
  const libc = acquireLibc();
  let delay = 10;
  let last: Error | undefined;
  try {
    while (true) {
      if (options.signal?.aborted) {
        throw new AbortError(`Connecting to ${where}`, { cause: options.signal.reason });
      }
      const fd = libc.sym.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0);
      if (fd < 0) throw osError(libc, libc.errno(), "socket(AF_UNIX)");
      if (libc.sym.connect(fd, sockaddr, 2 + pathBytes.length + 1) === 0) {
        return new UnixFdTransport(fd, libc);
      }
      const errno = libc.errno();
      libc.sym.close(fd);
      last = osError(libc, errno, `connect(${where})`);
      const retryable = errno === C.EAGAIN ||
        (options.retry === true && (errno === C.ENOENT || errno === C.ECONNREFUSED));
      if (!retryable) {
        throw new ConnectionError(`Cannot connect to ${where}: ${last.message}`, {
          cause: last,
          address: where,
        });
      }
      const remaining = options.deadline - Date.now();
      if (remaining <= 0) {
        throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs, {
          cause: last,
          hint: errno === C.EAGAIN
            ? "the server's accept queue stayed full: is it accepting connections?"
            : `last: ${last.message}`,
        });
      }
      await sleep(Math.min(delay, remaining), options.signal, where);
      delay = Math.min(delay * 2, 200);
    }
  } catch (err) {
    libc.release();
    throw err;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortError(`Connecting to ${where}`, { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
