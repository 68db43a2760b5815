/**
 * The few libc calls fd passing needs (`socket`, `connect`, `sendmsg`, `recv`,
 * `poll`, `open`, ...), through `Deno.dlopen` (needs `--allow-ffi`). Linux only
 * (x86_64 and aarch64 share these struct layouts). Nothing is loaded until a
 * caller asks: importing this module needs no permission.
 *
 * The library is reference-counted: loaded by the first {@link acquireLibc},
 * unloaded when the last holder releases it, so tests' resource sanitizers see
 * nothing left open.
 *
 * @module
 */
import { FdPassingError } from "./errors.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  // The only call that may wait: it runs on Deno's blocking thread pool, not the event loop.
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
} as const;

/** The loaded symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Linux constants (asm-generic; the same on x86_64 and aarch64). */
export const C = {
  AF_UNIX: 1,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  SHUT_RDWR: 2,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
  O_CLOEXEC: 0o2000000,
  EINTR: 4,
  EAGAIN: 11,
  ENOENT: 2,
  EACCES: 13,
  EEXIST: 17,
  EPIPE: 32,
  ECONNRESET: 104,
  ECONNREFUSED: 111,
} as const;

/** A held reference to libc; call `release()` exactly once when done. */
export interface LibcRef {
  /** The symbols. */
  readonly sym: LibcSymbols;
  /** The calling thread's `errno` (read right after a failed synchronous call). */
  errno(): number;
  /** `strerror(errno)`. */
  describe(errno: number): string;
  /** Drops this reference; the library is unloaded when none is left. */
  release(): void;
}

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
let holders = 0;

/**
 * Loads libc (or takes another reference to it). Throws {@link FdPassingError}
 * naming `--allow-ffi` when the permission is missing, and on other systems than Linux.
 */
export function acquireLibc(): LibcRef {
  if (Deno.build.os !== "linux") {
    throw new FdPassingError(
      `File descriptor passing is implemented for Linux only (this is ${Deno.build.os})`,
    );
  }
  if (!lib) {
    const state = Deno.permissions.querySync({ name: "ffi" }).state;
    if (state !== "granted") {
      throw new FdPassingError(
        "File descriptor passing calls libc (sendmsg with SCM_RIGHTS) through Deno's FFI: " +
          "run Deno with --allow-ffi (only fd passing needs it)",
      );
    }
    try {
      lib = Deno.dlopen("libc.so.6", SYMBOLS);
    } catch (cause) {
      throw new FdPassingError(
        `Cannot load libc.so.6 for file descriptor passing: ${
          cause instanceof Error ? cause.message : cause
        }`,
        { cause },
      );
    }
  }
  holders++;
  const sym = lib.symbols;
  let released = false;
  return {
    sym,
    errno: () => new Deno.UnsafePointerView(sym.__errno_location()!).getInt32(),
    describe: (errno) => {
      const p = sym.strerror(errno);
      return p ? Deno.UnsafePointerView.getCString(p) : `errno ${errno}`;
    },
    release: () => {
      if (released) return;
      released = true;
      if (--holders === 0) {
        lib?.close();
        lib = undefined;
      }
    },
  };
}

/** Maps an errno to the `Deno.errors` class of the same meaning (so callers can test `name`). */
export function osError(ref: LibcRef, errno: number, what: string): Error {
  const text = `${what}: ${ref.describe(errno)} (os error ${errno})`;
  switch (errno) {
    case C.ENOENT:
      return new Deno.errors.NotFound(text);
    case C.ECONNREFUSED:
      return new Deno.errors.ConnectionRefused(text);
    case C.ECONNRESET:
      return new Deno.errors.ConnectionReset(text);
    case C.EPIPE:
      return new Deno.errors.BrokenPipe(text);
    case C.EACCES:
      return new Deno.errors.PermissionDenied(text);
    case C.EEXIST:
      return new Deno.errors.AlreadyExists(text);
    case C.EAGAIN:
      return new Deno.errors.WouldBlock(text);
    default:
      return new Error(text);
  }
}

/** A NUL-terminated copy of `s` for a `buffer` parameter. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
