/**
 * Locates the tiny Linux test guest (a Debian kernel plus a busybox initramfs) that
 * `deno task guest` builds once per machine. Boot it with
 * `-kernel guest.kernel -initrd guest.initrd -append guest.append`; it prints
 * `guest.readyMarker` on the serial console when it is ready and powers off cleanly
 * on `system_powerdown`. When built with Debian's `qemu-guest-agent` installed
 * (`guest.agent`), it starts `qemu-ga` on the virtio-serial port named
 * `org.qemu.guest_agent.0` (`launch({ guest: "tiny", agent: true })` adds it).
 *
 * @module
 */

import { join } from "node:path";

const MANIFEST = "guest.json";
const KERNEL = "vmlinuz";
const INITRD = "initramfs.cpio.gz";
const DEFAULT_MARKER = "QMPKIT-GUEST-READY";
const DEFAULT_APPEND = "console=ttyS0 quiet panic=-1";

/** A built tiny guest: absolute paths to its files and how to boot it. */
export interface TinyGuest {
  /** Absolute path of the kernel image, for `-kernel`. */
  kernel: string;
  /** Absolute path of the gzip-compressed newc initramfs, for `-initrd`. */
  initrd: string;
  /** Recommended kernel command line, for `-append`. */
  append: string;
  /** Line the guest prints on its serial console (ttyS0) once it is ready. */
  readyMarker: string;
  /** True when the guest runs the QEMU guest agent (`qemu-ga`) on `org.qemu.guest_agent.0`. */
  agent: boolean;
  /** The parsed `guest.json` manifest written by the builder. */
  manifest: Record<string, unknown>;
}

/** Thrown by {@link findTinyGuest} when the guest has not been built (or its cache is broken). */
export class GuestNotBuiltError extends Error {
  /** Creates the error; `detail` says what is missing. The message names the build command. */
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`Tiny guest not built (${detail}); build it with: deno task guest`, options);
    this.name = "GuestNotBuiltError";
  }
}

function envDir(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value ? value : undefined;
}

/**
 * The directory holding the tiny guest: `$QMPKIT_CACHE/guest` when `QMPKIT_CACHE` is
 * set, else `$XDG_CACHE_HOME/qmpkit/guest`, else `$HOME/.cache/qmpkit/guest`.
 * Needs `--allow-env`; throws if none of these variables is set.
 */
export function guestCacheDir(): string {
  const qmpkit = envDir("QMPKIT_CACHE");
  if (qmpkit) return join(qmpkit, "guest");
  const xdg = envDir("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "qmpkit", "guest");
  const home = envDir("HOME");
  if (home) return join(home, ".cache", "qmpkit", "guest");
  throw new Error("Cannot locate the qmpkit cache: set QMPKIT_CACHE, XDG_CACHE_HOME or HOME");
}

async function isNonEmptyFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.isFile && info.size > 0;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Finds the cached tiny guest built by `deno task guest`. Needs `--allow-env` and
 * `--allow-read` on the cache directory. Throws {@link GuestNotBuiltError} when the
 * manifest, kernel or initramfs is missing or the manifest is unreadable.
 *
 * @example
 * ```ts ignore
 * const guest = await findTinyGuest();
 * const args = ["-kernel", guest.kernel, "-initrd", guest.initrd, "-append", guest.append];
 * ```
 */
export async function findTinyGuest(): Promise<TinyGuest> {
  const dir = guestCacheDir();
  const manifestPath = join(dir, MANIFEST);
  let text: string;
  try {
    text = await Deno.readTextFile(manifestPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new GuestNotBuiltError(`no ${manifestPath}`, { cause: e });
    }
    throw e;
  }
  let manifest: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new TypeError("manifest is not a JSON object");
    }
    manifest = parsed as Record<string, unknown>;
  } catch (e) {
    throw new GuestNotBuiltError(`unreadable ${manifestPath}`, { cause: e });
  }
  const kernel = join(dir, KERNEL);
  const initrd = join(dir, INITRD);
  for (const file of [kernel, initrd]) {
    if (!(await isNonEmptyFile(file))) throw new GuestNotBuiltError(`missing ${file}`);
  }
  const append = typeof manifest.append === "string" ? manifest.append : DEFAULT_APPEND;
  const readyMarker = typeof manifest.readyMarker === "string"
    ? manifest.readyMarker
    : DEFAULT_MARKER;
  const agent = typeof manifest.agent === "object" && manifest.agent !== null;
  return { kernel, initrd, append, readyMarker, agent, manifest };
}
