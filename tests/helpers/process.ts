/**
 * Probes for whether a process still exists, for tests that check nothing is
 * left running (a zombie counts as existing; tests/faults/harness.ts has a
 * zombie-aware `alive` built on `ps`).
 *
 * @module
 */

/** True while a process with this pid exists (probed with a harmless SIGCONT; needs --allow-run). */
export function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT"); // harmless probe
    return true;
  } catch {
    return false;
  }
}

/** Waits (polling every 50 ms, at most `ms`) until `pid` is gone; true if it is. */
export async function gone(pid: number, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

/**
 * True while a process with this pid exists, asked with `kill -0` in a
 * subprocess (sends no signal; reading /proc needs --allow-all).
 */
export async function pidExists(pid: number): Promise<boolean> {
  const out = await new Deno.Command("kill", {
    args: ["-0", String(pid)],
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}
