/**
 * `deno task bench`: runs every benchmark of the "performance and scale" issue,
 * each in its own Deno process (so memory figures and JIT state do not leak
 * between them), and prints ONE table: figure, ours, baseline, ratio, target,
 * met?. Timing ratios come from the same run, ours and the baseline
 * interleaved (A B A B ...), medians. Prints only; never asserts.
 *
 *   deno run -A bench/main.ts [--quick] [--only=pipelined,schema,events,waits,cli_startup,fleet,remote,launch,ssh,libvirt]
 *                             [--compare=LIBDIR]   (also measure a patched copy of lib/)
 *                             [--compare-tree=DIR] (cli_startup: also time another checkout's CLI)
 *
 * Also the shared helpers of the bench scripts (imported by them; this module
 * runs the suite only when it is the main module).
 *
 * @module
 */
import process from "node:process";

/** One line of the final table. */
export interface Row {
  /** What is measured. */
  figure: string;
  /** Our figure, formatted with its unit. */
  ours: string;
  /** The baseline's figure, formatted, or "—". */
  baseline: string;
  /** ours/baseline as the target defines it (higher or lower is better, see `target`), or NaN. */
  ratio: number;
  /** The target, e.g. "≥ 0.95×". */
  target: string;
  /** Whether the target is met; `undefined` when there is nothing to meet (a report). */
  met: boolean | undefined;
}

/** Round trips one after another (`seq`), or `ROUND_TRIP_WINDOW` in flight (`pipe`, oob). */
export type RoundTripMode = "seq" | "pipe";

/** In-band commands in flight for `pipe` (QEMU's queue length with oob). */
export const ROUND_TRIP_WINDOW = 8;

/**
 * `n` timed `query-status` round trips on `qmp` after `warmup` untimed ones, per second.
 * `qmp` is any client (this checkout's or a `--compare` copy's).
 */
export async function queryStatusRate(
  qmp: { execute(command: "query-status"): Promise<unknown> },
  mode: RoundTripMode,
  n: number,
  warmup: number,
): Promise<number> {
  const batch = async (count: number) => {
    if (mode === "seq") {
      for (let i = 0; i < count; i++) await qmp.execute("query-status");
      return;
    }
    let left = count;
    const worker = async () => {
      while (left-- > 0) await qmp.execute("query-status");
    };
    await Promise.all(Array.from({ length: ROUND_TRIP_WINDOW }, worker));
  };
  await batch(warmup);
  const t0 = performance.now();
  await batch(n);
  return n / ((performance.now() - t0) / 1000);
}

/** Median (mean of the two middle values for an even count), ignoring NaN; NaN if none. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The p-th percentile (0–100), nearest rank. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** Formats a number with thousands separators and `digits` decimals. */
export function num(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return "—";
  return n.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Formats a byte count in MiB / KiB. */
export function bytes(n: number): string {
  if (!Number.isFinite(n)) return "—";
  return Math.abs(n) >= 1024 * 1024 ? `${num(n / 1024 / 1024, 1)} MiB` : `${num(n / 1024, 1)} KiB`;
}

/** Runs a command, returns its stdout; throws with its stderr when it fails. */
export async function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Runs a command and parses the last line of its stdout as JSON. */
export async function runJson<T>(cmd: string, args: string[], timeoutMs?: number): Promise<T> {
  const text = await run(cmd, args, timeoutMs);
  const lines = text.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as T;
}

let pythonPath: string | undefined;

/**
 * The real Python interpreter (`sys.executable`), resolved once: a version
 * manager's `python3` shim (pyenv) can add a second per start.
 */
export async function python(): Promise<string> {
  if (pythonPath === undefined) {
    pythonPath = (await run("python3", ["-c", "import sys; print(sys.executable)"])).trim() ||
      "python3";
  }
  return pythonPath;
}

/**
 * CPU time this process has used, in ms (user + system, microsecond
 * resolution): for in-process measurements, far less disturbed than wall time
 * by other processes on a shared machine.
 */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Path of a file next to this module. */
export function here(name: string): string {
  return new URL(name, import.meta.url).pathname;
}

/** The flags a bench child process gets: what `deno task bench` grants, and no type-check. */
export const DENO_FLAGS = [
  "--no-check",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
];

/** The library modules the benches drive (dynamically imported, see {@link loadLib}). */
export interface Lib {
  client: typeof import("../lib/client.ts");
  framing: typeof import("../lib/framing.ts");
  machine: typeof import("../lib/machine.ts");
}

/**
 * Imports the library from `--lib=DIR` (a patched copy of `lib/`, to measure a
 * proposed change against the original in the same run), else from `../lib/`.
 */
export async function loadLib(dir = flag("lib")): Promise<Lib> {
  const base = dir
    ? new URL(`file://${Deno.realPathSync(dir)}/`)
    : new URL("../lib/", import.meta.url);
  const [client, framing, machine] = await Promise.all([
    import(new URL("client.ts", base).href),
    import(new URL("framing.ts", base).href),
    import(new URL("machine.ts", base).href),
  ]);
  return { client, framing, machine };
}

/** Reads `--name=value` from `Deno.args`. */
export function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  const hit = Deno.args.find((a) => a.startsWith(prefix));
  if (hit !== undefined) return hit.slice(prefix.length);
  return Deno.args.includes(`--${name}`) ? "" : undefined;
}

/** A figure as a ratio row: `higherIsBetter` decides the direction of the target. */
export function ratioRow(
  figure: string,
  ours: number,
  baseline: number,
  format: (n: number) => string,
  target: { op: "≥" | "≤"; value: number },
): Row {
  const ratio = ours / baseline;
  return {
    figure,
    ours: format(ours),
    baseline: format(baseline),
    ratio,
    target: `${target.op} ${target.value}×`,
    met: target.op === "≥" ? ratio >= target.value : ratio <= target.value,
  };
}

/** Prints rows as one aligned table. */
export function printTable(rows: Row[]): void {
  const head = ["figure", "ours", "baseline", "ratio", "target", "met?"];
  const cells = rows.map((r) => [
    r.figure,
    r.ours,
    r.baseline,
    Number.isFinite(r.ratio) ? `${r.ratio.toFixed(2)}×` : "—",
    r.target,
    r.met === undefined ? "—" : r.met ? "yes" : "NO",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => `| ${c.map((x, i) => x.padEnd(widths[i])).join(" | ")} |`;
  console.log(line(head));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const c of cells) console.log(line(c));
}

/** Emits a bench's rows: as JSON (one line, for bench/main.ts) with `--json`, else a table. */
export function emit(rows: Row[], notes: string[] = []): void {
  if (flag("json") !== undefined) {
    console.log(JSON.stringify({ rows, notes }));
  } else {
    printTable(rows);
    for (const n of notes) console.log(`  ${n}`);
  }
}

/** The benches, in table order: script and a generous time bound. */
const SUITE: { name: string; script: string; timeoutMs: number }[] = [
  { name: "pipelined", script: "pipelined.ts", timeoutMs: 240_000 },
  { name: "schema", script: "schema.ts", timeoutMs: 180_000 },
  { name: "events", script: "events.ts", timeoutMs: 240_000 },
  { name: "waits", script: "waits.ts", timeoutMs: 240_000 },
  { name: "cli_startup", script: "cli_startup.ts", timeoutMs: 240_000 },
  { name: "fleet", script: "fleet.ts", timeoutMs: 300_000 },
  { name: "remote", script: "remote.ts", timeoutMs: 240_000 },
  { name: "launch", script: "launch.ts", timeoutMs: 180_000 },
  { name: "ssh", script: "ssh.ts", timeoutMs: 180_000 },
  { name: "libvirt", script: "libvirt.ts", timeoutMs: 240_000 },
];

async function main(): Promise<void> {
  const only = flag("only")?.split(",").filter(Boolean);
  const quick = flag("quick") !== undefined;
  const compare = flag("compare");
  const compareTree = flag("compare-tree");
  const rows: Row[] = [];
  const notes: string[] = [];
  const started = performance.now();
  for (const b of SUITE) {
    if (only && !only.includes(b.name)) continue;
    const t0 = performance.now();
    console.error(`bench: ${b.name} ...`);
    try {
      const out = await runJson<{ rows: Row[]; notes: string[] }>(
        Deno.execPath(),
        [
          "run",
          ...DENO_FLAGS,
          here(b.script),
          "--json",
          ...(quick ? ["--quick"] : []),
          ...(compare ? [`--compare=${compare}`] : []),
          ...(compareTree ? [`--compare-tree=${compareTree}`] : []),
        ],
        b.timeoutMs,
      );
      rows.push(...out.rows);
      notes.push(...out.notes.map((n) => `${b.name}: ${n}`));
    } catch (err) {
      rows.push({
        figure: `${b.name} (failed)`,
        ours: "—",
        baseline: "—",
        ratio: NaN,
        target: "—",
        met: false,
      });
      notes.push(`${b.name}: ${err instanceof Error ? err.message.split("\n")[0] : err}`);
    }
    console.error(`bench: ${b.name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const qemu = (await run("qemu-system-x86_64", ["--version"]).catch(() => "qemu ?")).split(
    "\n",
  )[0];
  console.log(
    `qmpkit bench — deno ${Deno.version.deno}, ${qemu}, ${navigator.hardwareConcurrency} CPUs, ` +
      `${((performance.now() - started) / 1000).toFixed(0)} s` + (quick ? " (--quick)" : ""),
  );
  console.log("");
  printTable(rows);
  if (notes.length) {
    console.log("");
    for (const n of notes) console.log(`- ${n}`);
  }
}

if (import.meta.main) await main();
