/**
 * The shell's history file, opened safely: never through a symbolic link,
 * only a regular file (a FIFO would block, a device like /dev/zero never
 * ends), read with a size bound, and written as a new 0600 file renamed over
 * the old one (so a crash never leaves half a file, and a link planted in
 * its place is replaced, never followed).
 *
 * @module
 */
import { redactText } from "../../lib/redact.ts";
import { History } from "./line_editor.ts";

/** At most this much of a history file is read (its newest end). */
export const HISTORY_MAX_BYTES = 1024 * 1024;

/** What {@link loadHistoryFile} found. */
export interface LoadedHistory {
  /** The entries read (empty when the file is missing or unusable). */
  history: History;
  /** False when the file must not be written (it is not a regular file, or unreadable). */
  save: boolean;
  /** Why the file was not used, for a one-line warning. */
  warning?: string;
}

/**
 * Reads the history file at `path`. A missing file is an empty history that
 * will be created; anything but a regular file (symlink, FIFO, device,
 * directory) is neither read nor written. Files over
 * {@link HISTORY_MAX_BYTES} are read from their end.
 */
export async function loadHistoryFile(
  path: string,
  options: { limit?: number; maxBytes?: number } = {},
): Promise<LoadedHistory> {
  const maxBytes = options.maxBytes ?? HISTORY_MAX_BYTES;
  const empty = (save: boolean, warning?: string): LoadedHistory => ({
    history: new History([], options.limit),
    save,
    warning,
  });
  let before: Deno.FileInfo;
  try {
    before = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return empty(true);
    return empty(false, `cannot use history file ${path}: ${message(e)}`);
  }
  if (!before.isFile) return empty(false, notRegular(path, before));
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    return empty(false, `cannot read history file ${path}: ${message(e)}`);
  }
  try {
    // The file checked is the file opened (not swapped for a link in between).
    const info = await file.stat();
    if (!info.isFile || info.ino !== before.ino || info.dev !== before.dev) {
      return empty(false, notRegular(path, info));
    }
    const size = info.size;
    const skip = Math.max(0, size - maxBytes);
    if (skip > 0) await file.seek(skip, Deno.SeekMode.Start);
    const buf = new Uint8Array(Math.min(size, maxBytes));
    let n = 0;
    while (n < buf.length) {
      const r = await file.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    let lines = new TextDecoder().decode(buf.subarray(0, n)).split("\n");
    if (skip > 0) lines = lines.slice(1); // the first line read is cut
    return { history: new History(lines, options.limit), save: true };
  } catch (e) {
    return empty(false, `cannot read history file ${path}: ${message(e)}`);
  } finally {
    file.close();
  }
}

/**
 * Writes `entries` to `path` (one per line, secrets redacted: a password typed
 * in the shell never reaches the file) through a temporary 0600 file in the
 * same directory, renamed into place. Does nothing when `path` exists and
 * is not a regular file. Returns a warning on failure (history is best effort).
 */
export function saveHistoryFile(path: string, entries: readonly string[]): string | undefined {
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : slash === 0 ? "/" : ".";
  const base = path.slice(slash + 1);
  try {
    const info = Deno.lstatSync(path);
    if (!info.isFile) return notRegular(path, info);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) return `cannot save history: ${message(e)}`;
  }
  const tmp = `${dir}/.${base}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(tmp, entries.map(redactText).join("\n") + "\n", {
      createNew: true,
      mode: 0o600,
    });
    Deno.renameSync(tmp, path);
    return undefined;
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch { /* not created */ }
    return `cannot save history to ${path}: ${message(e)}`;
  }
}

function notRegular(path: string, info: Deno.FileInfo): string {
  const kind = info.isSymlink
    ? "a symbolic link"
    : info.isFifo
    ? "a FIFO"
    : info.isDirectory
    ? "a directory"
    : info.isCharDevice || info.isBlockDevice
    ? "a device"
    : "not a plain file";
  return `history file ${path} is not a regular file (${kind}): history is not read or saved`;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
