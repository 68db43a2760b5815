/**
 * File descriptors to pass to QEMU (`getfd`, `add-fd`): {@link openFd} opens a
 * file through libc and returns a {@link FileDescriptor} whose raw fd number
 * can travel in an `SCM_RIGHTS` message.
 *
 * Why not `Deno.FsFile`: Deno exposes no public way to get the OS descriptor
 * behind a file's resource id, so the file is opened here, by libc's `open()`
 * (needs `--allow-ffi`; Deno's `--allow-read`/`--allow-write` for the path are
 * checked too, since FFI itself would bypass them).
 *
 * @module
 */
import { FdPassingError } from "./errors.ts";
import { acquireLibc, C, cString, type LibcRef, osError } from "./libc_ffi.ts";

/** How to open a file with {@link openFd} (like `Deno.OpenOptions`). */
export interface OpenFdOptions {
  /** Open for reading (default `true`). */
  read?: boolean;
  /** Open for writing (default `false`). */
  write?: boolean;
  /** Create the file when it is missing (needs `write`). */
  create?: boolean;
  /** Fail when the file exists (implies `create`). */
  createNew?: boolean;
  /** Truncate to zero length (needs `write`). */
  truncate?: boolean;
  /** Writes go to the end (implies `write`). */
  append?: boolean;
  /** Permission bits of a created file (default `0o600`). */
  mode?: number;
}

/**
 * An open OS file descriptor, owned by this process, that can be passed to
 * QEMU with `execute(cmd, args, { fds: [fd] })`. QEMU receives its own copy:
 * close this one whenever you like once the command has returned. Close it
 * (or `using`) when done; it is not closed by the QMP client.
 *
 * @example
 * ```ts ignore
 * using image = openFd("/var/lib/vm/disk.qcow2", { write: true });
 * const info = await qmp.execute("add-fd", { "fdset-id": 1 }, { fds: [image] });
 * ```
 */
export class FileDescriptor implements Disposable {
  /** The path it was opened from, for messages. */
  readonly path: string;
  #fd: number;
  #libc: LibcRef | undefined;

  /** @internal Use {@link openFd}. */
  constructor(fd: number, path: string, libc: LibcRef) {
    this.#fd = fd;
    this.path = path;
    this.#libc = libc;
  }

  /** The raw descriptor number. Throws {@link FdPassingError} once closed. */
  get fd(): number {
    if (this.#fd < 0) {
      throw new FdPassingError(`The file descriptor of ${this.path} is closed: open it again`);
    }
    return this.#fd;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Closes the descriptor (QEMU's copy stays open). Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#libc!.sym.close(this.#fd);
    this.#fd = -1;
    this.#libc!.release();
    this.#libc = undefined;
  }

  /** Closes the descriptor (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** What `fds` accepts: a {@link FileDescriptor}, or a raw fd number you own (e.g. `0`). */
export type FdSource = FileDescriptor | number;

/**
 * Opens `path` with libc's `open()` (`O_CLOEXEC` always) and returns its
 * descriptor. Throws {@link FdPassingError} without `--allow-ffi`, or without
 * Deno's read/write permission for `path`; `Deno.errors.NotFound`,
 * `PermissionDenied`, `AlreadyExists` for the OS's refusals.
 */
export function openFd(path: string, options: OpenFdOptions = {}): FileDescriptor {
  const read = options.read ?? true;
  const write = options.write === true || options.append === true;
  const create = options.create === true || options.createNew === true;
  if ((create || options.truncate) && !write) {
    throw new TypeError(`openFd(${JSON.stringify(path)}): create and truncate need write: true`);
  }
  if (!read && !write) {
    throw new TypeError(`openFd(${JSON.stringify(path)}): open for read, write or both`);
  }
  const needed: ("read" | "write")[] = [
    ...(read ? ["read" as const] : []),
    ...(write ? ["write" as const] : []),
  ];
  for (const name of needed) {
    if (Deno.permissions.querySync({ name, path }).state !== "granted") {
      throw new FdPassingError(
        `openFd(${JSON.stringify(path)}) needs --allow-${name} for that path ` +
          `(FFI would bypass Deno's permissions, so they are checked here)`,
      );
    }
  }
  const libc = acquireLibc();
  let flags = (read && write ? C.O_RDWR : write ? C.O_WRONLY : C.O_RDONLY) | C.O_CLOEXEC;
  if (create) flags |= C.O_CREAT;
  if (options.createNew) flags |= C.O_EXCL;
  if (options.truncate) flags |= C.O_TRUNC;
  if (options.append) flags |= C.O_APPEND;
  const fd = libc.sym.open(cString(path), flags, options.mode ?? 0o600);
  if (fd < 0) {
    const errno = libc.errno();
    const err = osError(libc, errno, `openFd(${JSON.stringify(path)})`);
    libc.release();
    throw err;
  }
  return new FileDescriptor(fd, path, libc);
}

/** QEMU's limit of descriptors per message (`TCP_MAX_FDS` in chardev/char-socket.c). */
export const MAX_FDS_PER_COMMAND = 16;

/**
 * Resolves `fds` to raw numbers for one command. Throws {@link FdPassingError}
 * for a closed descriptor, a bad number, or more than {@link MAX_FDS_PER_COMMAND}.
 */
export function rawFds(command: string, fds: readonly FdSource[]): number[] {
  if (!Array.isArray(fds)) {
    throw new FdPassingError(`${command}: fds must be an array of FileDescriptor or numbers`);
  }
  if (fds.length > MAX_FDS_PER_COMMAND) {
    throw new FdPassingError(
      `${command}: ${fds.length} descriptors in one command; QEMU accepts at most ` +
        `${MAX_FDS_PER_COMMAND} per message`,
    );
  }
  return fds.map((f) => {
    if (f instanceof FileDescriptor) return f.fd;
    if (typeof f === "number" && Number.isInteger(f) && f >= 0 && f <= 0x7fffffff) return f;
    throw new FdPassingError(
      `${command}: ${JSON.stringify(f)} is not a file descriptor (FileDescriptor from openFd(), ` +
        `or a non-negative integer you own)`,
    );
  });
}
