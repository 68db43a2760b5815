/**
 * Building blocks shared by the launchers (`launch()` for QEMU,
 * `launchStorageDaemon()`): finding a binary on `PATH`, pumping a child's
 * output into a sink, and how long to wait for its pipes after it exited.
 *
 * @module
 */

/** How much of a child's stderr is kept (the tail), in characters. */
export const STDERR_KEEP = 64 * 1024;

/** After the child exits, how long its pipes may take to reach EOF before they are cancelled. */
export const PIPE_GRACE_MS = 500;

/**
 * Looks `binary` up on PATH. Returns the path, `null` when it is certainly
 * missing, or the name itself when PATH cannot be read (no permission).
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
  for (const dir of (path ?? "").split(":")) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/${binary}`).isFile) return `${dir}/${binary}`;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) return binary;
    }
  }
  return null;
}

/** Reads `stream` into `sink` (decoded text) until EOF or `cancel()`. */
export function pump(
  stream: ReadableStream<Uint8Array>,
  sink: (text: string) => void,
): { done: Promise<void>; cancel: () => void } {
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  const done = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        sink(decoder.decode(value, { stream: true }));
      }
    } catch { /* the process went away */ }
    sink(decoder.decode());
  })();
  return { done, cancel: () => void reader.cancel().catch(() => {}) };
}
