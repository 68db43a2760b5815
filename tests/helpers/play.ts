/**
 * Test helper: runs `scripts/play.ts` in a subprocess (output captured as it
 * arrives, killed at a deadline), and writes playbooks into temp dirs that
 * import the library by absolute file URL.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const PLAY = fileURLToPath(new URL("../../scripts/play.ts", import.meta.url));
export const PLAYBOOK_URL = new URL("../../lib/runner/playbook.ts", import.meta.url).href;
const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

/** A running `play.ts` subprocess with its output captured as it arrives. */
export class Play {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly done: Promise<{ code: number; stdout: string; stderr: string }>;
  #listeners: (() => void)[] = [];

  constructor(
    args: string[],
    options: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
  ) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", ...PERMS, PLAY, ...args],
      cwd: options.cwd ?? ROOT,
      env: { NO_COLOR: "1", ...options.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const d = new TextDecoder();
      for await (const chunk of stream) {
        this[key] += d.decode(chunk, { stream: true });
        for (const l of this.#listeners) l();
      }
    };
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, timeoutMs);
    this.done = (async () => {
      const [status] = await Promise.all([
        child.status,
        pump(child.stdout, "stdout"),
        pump(child.stderr, "stderr"),
      ]);
      clearTimeout(timer);
      if (status.signal === "SIGKILL") {
        throw new Error(`play.ts ${args.join(" ")} overran ${timeoutMs} ms:\n${this.stderr}`);
      }
      return { code: status.code, stdout: this.stdout, stderr: this.stderr };
    })();
  }

  /** Resolves once stderr matches `pattern` (or rejects after `ms`). */
  waitStderr(pattern: RegExp, ms = 30_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.stderr.match(pattern);
        if (m) {
          done();
          resolve(m);
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.#listeners = this.#listeners.filter((l) => l !== check);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`stderr never matched ${pattern} within ${ms} ms:\n${this.stderr}`));
      }, ms);
      this.#listeners.push(check);
      check();
    });
  }
}

export function play(
  args: string[],
  options?: { env?: Record<string, string>; timeoutMs?: number; cwd?: string },
) {
  return new Play(args, options).done;
}

/** Writes `NAME.playbook.ts` into `dir`, with `playbook` imported by absolute URL. */
export async function writePlaybook(dir: string, name: string, body: string): Promise<string> {
  const path = `${dir}/${name}.playbook.ts`;
  await Deno.writeTextFile(path, `import { playbook } from "${PLAYBOOK_URL}";\n${body}\n`);
  return path;
}

export async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-runner-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
