/**
 * Runs the `qmp` CLI (scripts/qmp.ts) as a subprocess for tests: stdin text,
 * environment, working directory; killed after a deadline.
 *
 * @module
 */

const QMP_TS = new URL("../../scripts/qmp.ts", import.meta.url).pathname;
/** The permissions of `deno task qmp`. */
export const PERMS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
];

/** The outcome of a CLI run. */
export interface Run {
  /** Exit code. */
  code: number;
  /** Everything written to stdout. */
  stdout: string;
  /** Everything written to stderr. */
  stderr: string;
}

/** Options of {@link qmp}. */
export interface QmpRunOptions {
  /** Text (or bytes) written to stdin, then closed; stdin is /dev/null otherwise. */
  stdin?: string | Uint8Array;
  /** Extra environment (NO_COLOR=1 is always set). */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** Killed (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
}

/** Runs `deno run scripts/qmp.ts ARGS` to completion. */
export async function qmp(args: string[], opts: QmpRunOptions = {}): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMS, QMP_TS, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    cwd: opts.cwd,
    env: { NO_COLOR: "1", ...opts.env },
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, opts.timeoutMs ?? 30_000);
  try {
    const feed = (async () => {
      if (opts.stdin === undefined) return;
      const w = child.stdin.getWriter();
      try {
        await w.write(
          typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin,
        );
        await w.close();
      } catch { /* the CLI stopped reading (it exited) */ }
    })();
    const [out] = await Promise.all([child.output(), feed]);
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** A readable dump of a run, for assertion messages. */
export function show(r: Run): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}
