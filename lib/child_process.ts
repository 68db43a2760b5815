/**
 * Building blocks shared by the launchers (`launch()` for QEMU,
 * `launchStorageDaemon()`): finding a binary on `PATH`, spawning a child in
 * its own session, pumping its output into a sink, reaping it (its process
 * group killed, its pipes drained within a grace period), describing its exit.
 *
 * @module
 */
import { killProcessGroup } from "./orphan_guard.ts";

/** How much of a child's stderr is kept (the tail), in characters. */
export const STDERR_KEEP = 64 * 1024;

/** After the child exits, how long its pipes may take to reach EOF before they are cancelled. */
export const PIPE_GRACE_MS = 500;

/** Per binary name: the PATH it was looked up in and where it was found there. */
const lastFound = new Map<string, { path: string; found: string }>();

/**
 * Looks `binary` up on PATH. Returns the path, `null` when it is certainly
 * missing, or the name itself when PATH cannot be read (no permission).
 * The hit of the previous lookup under the same PATH is checked first (one
 * `stat` instead of one per PATH entry: each miss throws, and a fleet of
 * launches pays for the errors).
 */
export function findOnPath(binary: string): string | null {
  if (binary.includes("/")) {
    try {
      return Deno.statSync(binary).isFile ? binary : null;
    } catch (e) {
      return e instanceof Deno.errors.NotFound ? null : binary;
    }
  }
  let path: string | undefined;
  try {
    path = Deno.env.get("PATH");
  } catch {
    return binary;
  }
  path ??= "";
  const last = lastFound.get(binary);
  if (last && last.path === path) {
    try {
      if (Deno.statSync(last.found).isFile) return last.found;
    } catch { /* gone: search again */ }
    lastFound.delete(binary);
  }
  for (const dir of path.split(":")) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/${binary}`).isFile) {
        lastFound.set(binary, { path, found: `${dir}/${binary}` });
        return `${dir}/${binary}`;
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) return binary;
    }
  }
  return null;
}

/** The first read of {@link pump}, and the size it shrinks back to once output slows down. */
export const PUMP_MIN_READ = 512;

/** The largest read of {@link pump} (a child's pipe stream would otherwise allocate this per read). */
export const PUMP_MAX_READ = 64 * 1024;

/**
 * Reads `stream` into `sink` (decoded text) until EOF or `cancel()`.
 *
 * A byte stream (a child's pipe) is read into a buffer of our own: it starts at
 * {@link PUMP_MIN_READ} bytes, doubles after each read that fills it (up to
 * {@link PUMP_MAX_READ}) and halves after each read that uses less than a
 * quarter of it, so a quiet child holds a small pending read rather than the
 * 64 KiB chunk the stream would allocate, and a chatty one is still drained in
 * large reads. Other streams are read as they come.
 */
export function pump(
  stream: ReadableStream<Uint8Array>,
  sink: (text: string) => void,
): { done: Promise<void>; cancel: () => void } {
  const decoder = new TextDecoder();
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = stream.getReader({ mode: "byob" });
  } catch { /* not a byte stream */ }
  const reader = byob ?? stream.getReader();
  const done = (async () => {
    try {
      if (byob) {
        let buffer = new ArrayBuffer(PUMP_MIN_READ);
        while (true) {
          const { value, done } = await byob.read(new Uint8Array(buffer));
          if (done || value === undefined) break;
          sink(decoder.decode(value, { stream: true }));
          const size = value.buffer.byteLength;
          const next = value.byteLength === size
            ? Math.min(size * 2, PUMP_MAX_READ)
            : value.byteLength < size / 4
            ? Math.max(size / 2, PUMP_MIN_READ)
            : size;
          // The decoder copied the bytes: the buffer is free again (read() transferred it).
          buffer = next === size ? value.buffer : new ArrayBuffer(next);
        }
      } else {
        const plain = reader as ReadableStreamDefaultReader<Uint8Array>;
        while (true) {
          const { value, done } = await plain.read();
          if (done) break;
          sink(decoder.decode(value, { stream: true }));
        }
      }
    } catch { /* the process went away */ }
    sink(decoder.decode());
  })();
  return { done, cancel: () => void reader.cancel().catch(() => {}) };
}

/**
 * Spawns `guarded` in its own session (`detached`: a terminal's Ctrl-C goes to
 * the owner only, which can then run its cleanups before stopping the child;
 * the parent-death signal still covers the owner dying), stdout and stderr piped.
 * Throws what `Deno.Command.spawn()` throws.
 */
export function spawnDetached(
  guarded: { command: string; args: string[] },
  stdin: "piped" | "null",
): Deno.ChildProcess {
  return new Deno.Command(guarded.command, {
    args: guarded.args,
    stdin,
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
}

/**
 * Waits for `child` to exit, then kills what is left of its process group (a
 * helper it spawned, the child of a wrapper script may hold its stdout/stderr
 * open) and waits for the pipes' EOF no longer than {@link PIPE_GRACE_MS}
 * before cancelling them. Resolves with the exit status once `pumps` are done.
 */
export async function reap(
  child: Deno.ChildProcess,
  pumps: { done: Promise<void>; cancel: () => void }[],
): Promise<Deno.CommandStatus> {
  const status = await child.status;
  killProcessGroup(child.pid);
  const drained = Promise.all(pumps.map((p) => p.done));
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, PIPE_GRACE_MS)))]);
  clearTimeout(timer);
  for (const p of pumps) p.cancel();
  await drained;
  return status;
}

/** How a child ended, for messages: `"killed by SIGKILL"` or `"exited with code 1"`. */
export function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `killed by ${status.signal}` : `exited with code ${status.code}`;
}

/**
 * {@link describeStatus} plus the last 5 lines of `output` (already redacted)
 * under `label` (`"stderr"`, `"output"`), when there are any.
 */
export function describeExitWithTail(
  status: Deno.CommandStatus,
  output: string,
  label: string,
): string {
  const how = describeStatus(status);
  const tail = output.trim().split("\n").slice(-5).join("\n");
  return tail ? `${how}; ${label}:\n${tail}` : how;
}

/** Sends `sig` to `child` unless it is gone already (or cannot be signalled). */
export function signalChild(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch { /* already gone */ }
}

/**
 * The exit hook's synchronous stop: SIGKILLs `child` (while `running`: its pid
 * is not reused yet) and what is left of its process group, and removes `dir`.
 */
export function killNowSync(child: Deno.ChildProcess, running: boolean, dir: string): void {
  if (running) signalChild(child, "SIGKILL");
  killProcessGroup(child.pid);
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* best effort */ }
}
