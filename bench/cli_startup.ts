/**
 * CLI start-up: wall time of `deno run <task flags> scripts/qmp.ts exec ADDRESS
 * query-status` (what `deno task qmp exec ...` runs) vs a raw one-shot Python
 * client (`bench/baselines/oneshot.py`: connect, negotiate, query-status,
 * print), against the same QEMU (`launch()`, an extra monitor for the CLIs).
 *
 * To show what dominates, the same rounds also time: the CLI with
 * `--no-check` (Deno 2's `deno run` does not type-check, so it should equal
 * the default), with `--check` (cached type-check), the smallest qmpkit
 * one-shot (`bench/baselines/oneshot.ts`: `connect` from mod.ts), an empty
 * Deno script and `python3 -c pass` (start-up floors). Each variant runs once
 * first (warm caches), then rounds interleave every variant, order rotating.
 *
 *   deno run -A bench/cli_startup.ts [--rounds=10] [--quick] [--json]
 *
 * @module
 */
import { launch } from "../lib/machine.ts";
import { emit, flag, here, median, num, python, ratioRow, type Row } from "./main.ts";

const TASK_FLAGS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

interface Variant {
  name: string;
  cmd: string;
  args: string[];
  expect?: string;
}

async function time(v: Variant): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(v.cmd, {
    args: v.args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  const ms = performance.now() - t0;
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success || (v.expect && !text.includes(v.expect))) {
    throw new Error(
      `${v.name} failed (${out.code}): ${text} ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return ms;
}

/** Runs the rounds; returns rows. */
export async function bench(options: { rounds: number }) {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const sock = `${dir}/cli.sock`;
  try {
    await using _vm = await launch({
      name: "bench-cli",
      args: ["-qmp", `unix:${sock},server=on,wait=off`],
      timeout: "20s",
    });
    const deno = Deno.execPath();
    const py = await python();
    const cli = new URL("../scripts/qmp.ts", import.meta.url).pathname;
    const haveCli = await Deno.stat(cli).then(() => true, () => false);
    const address = `unix:${sock}`;
    const expect = '"running"';
    const minimal: Variant = {
      name: "qmpkit one-shot (connect from mod.ts)",
      cmd: deno,
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-net",
        here("baselines/oneshot.ts"),
        address,
      ],
      expect,
    };
    const ours: Variant = haveCli
      ? {
        name: "qmp.ts exec (deno task flags)",
        cmd: deno,
        args: ["run", ...TASK_FLAGS, cli, "exec", address, "query-status"],
        expect,
      }
      : minimal;
    const raw: Variant = {
      name: "python3 oneshot.py",
      cmd: py,
      args: [here("baselines/oneshot.py"), sock],
      expect,
    };
    const extra: Variant[] = [
      ...(haveCli
        ? [
          {
            name: "qmp.ts exec --no-check",
            cmd: deno,
            args: ["run", "--no-check", ...TASK_FLAGS, cli, "exec", address, "query-status"],
            expect,
          },
          {
            name: "qmp.ts exec --check (cached)",
            cmd: deno,
            args: ["run", "--check", ...TASK_FLAGS, cli, "exec", address, "query-status"],
            expect,
          },
          minimal,
        ]
        : []),
      { name: "deno run empty.ts (floor)", cmd: deno, args: ["run", here("baselines/empty.ts")] },
      { name: "python3 -c pass (floor)", cmd: py, args: ["-c", "pass"] },
    ];
    const all = [ours, raw, ...extra];
    const times = new Map<Variant, number[]>(all.map((v) => [v, []]));
    for (const v of all) await time(v); // warm caches (transpile, code cache, type-check)
    for (let r = 0; r < options.rounds; r++) {
      const k = r % all.length;
      for (const v of [...all.slice(k), ...all.slice(0, k)]) times.get(v)!.push(await time(v));
    }
    const med = (v: Variant) => median(times.get(v)!);
    const ms = (x: number) => `${num(x, 1)} ms`;
    const rows: Row[] = [
      ratioRow(
        haveCli ? "CLI `qmp exec ADDR query-status` wall time" : "one-shot (no qmp.ts) wall time",
        med(ours),
        med(raw),
        ms,
        { op: "≤", value: 1.5 },
      ),
    ];
    for (const v of extra) {
      rows.push({
        figure: `  ${v.name}`,
        ours: ms(med(v)),
        baseline: ms(med(raw)),
        ratio: med(v) / med(raw),
        target: "—",
        met: undefined,
      });
    }
    const notes = [
      `${options.rounds} interleaved rounds after one warm-up each; medians; baseline = ` +
      `${raw.name}${haveCli ? "" : "; scripts/qmp.ts missing: measured the minimal one-shot"}`,
      `all: ` + all.map((v) => `${v.name} [${times.get(v)!.map((x) => num(x)).join(" ")}]`)
        .join("; "),
    ];
    return { rows, notes };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const quick = flag("quick") !== undefined;
  const out = await bench({ rounds: Number(flag("rounds") ?? (quick ? 4 : 10)) });
  emit(out.rows, out.notes);
}
