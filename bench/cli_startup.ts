/**
 * CLI start-up: wall time of `deno run <task flags> scripts/qmp.ts exec ADDRESS
 * query-status` (what `deno task qmp exec ...` runs) vs a raw one-shot Python
 * client (`bench/baselines/oneshot.py`: connect, negotiate, query-status,
 * print), against the same QEMU (`launch()`, an extra monitor for the CLIs).
 *
 * To show what dominates, the same rounds also time: the CLI with
 * `--no-check` (Deno 2's `deno run` does not type-check, so it should equal
 * the default), with `--check` (cached type-check), the smallest qmpkit
 * one-shot (`bench/baselines/oneshot.ts`: `connect` from mod.ts), a raw Deno
 * one-shot without the library (`baselines/oneshot_raw.ts`, the realistic
 * floor), an empty Deno script and `python3 -c pass` (start-up floors).
 * Each variant runs once first (warm caches), then rounds interleave every
 * variant, order rotating.
 * The target is the CLI against the empty Deno script (Deno's own start-up);
 * Python is a comparison row. `baselines/exec_phases.ts` splits the CLI's
 * time into runtime start, module load, connect, command (same rounds).
 * `--compare-tree=DIR` also times the CLI of another checkout (e.g. the
 * commit before a patch, `git archive REV | tar -x -C DIR`); `DIR1,DIR2`
 * times several, in the same interleaved rounds.
 *
 *   deno run -A bench/cli_startup.ts [--rounds=10] [--quick] [--json] [--compare-tree=DIR[,DIR]]
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
  /** Receives stdout (the phases runs). */
  sink?: (stdout: string) => void;
}

/** Milliseconds per phase, from baselines/exec_phases.ts. */
interface Phases {
  boot: number;
  load: number;
  connect: number;
  command: number;
  close: number;
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
  v.sink?.(text);
  return ms;
}

/** Runs the rounds; returns rows. */
export async function bench(options: { rounds: number; compareTree?: string }) {
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
    const trees = options.compareTree?.split(",").filter((t) => t !== "") ?? [];
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
      ...(haveCli
        ? trees.map((tree) => ({
          name: `qmp.ts exec, ${tree}`,
          cmd: deno,
          args: ["run", ...TASK_FLAGS, `${tree}/scripts/qmp.ts`, "exec", address, "query-status"],
          expect,
        }))
        : []),
      {
        name: "deno oneshot_raw.ts (no library: the floor)",
        cmd: deno,
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--allow-net",
          here("baselines/oneshot_raw.ts"),
          sock,
        ],
        expect,
      },
      { name: "python3 -c pass (floor)", cmd: py, args: ["-c", "pass"] },
    ];
    const empty: Variant = {
      name: "deno run empty.ts (floor)",
      cmd: deno,
      args: ["run", here("baselines/empty.ts")],
    };
    const phaseRuns = [undefined, ...trees];
    const phases = new Map<string | undefined, Phases[]>(phaseRuns.map((t) => [t, []]));
    const phaseVariants: Variant[] = haveCli
      ? phaseRuns.map((tree) => ({
        name: `phases ${tree ?? "ours"}`,
        cmd: deno,
        args: [
          "run",
          ...TASK_FLAGS,
          here("baselines/exec_phases.ts"),
          address,
          ...(tree ? [tree] : []),
        ],
        sink: (out: string) => phases.get(tree)!.push(JSON.parse(out)),
      }))
      : [];
    const all = [ours, raw, empty, ...extra, ...phaseVariants];
    const times = new Map<Variant, number[]>(all.map((v) => [v, []]));
    for (const v of all) await time({ ...v, sink: undefined }); // warm caches (transpile, code cache)
    for (let r = 0; r < options.rounds; r++) {
      const k = r % all.length;
      for (const v of [...all.slice(k), ...all.slice(0, k)]) times.get(v)!.push(await time(v));
    }
    const med = (v: Variant) => median(times.get(v)!);
    const ms = (x: number) => `${num(x, 1)} ms`;
    const rows: Row[] = [
      ratioRow(
        haveCli
          ? "CLI `qmp exec ADDR query-status` vs deno empty.ts"
          : "one-shot (no qmp.ts) vs deno empty.ts",
        med(ours),
        med(empty),
        ms,
        { op: "≤", value: 1.25 },
      ),
      {
        figure: "  same, vs python3 oneshot.py",
        ours: ms(med(ours)),
        baseline: ms(med(raw)),
        ratio: med(ours) / med(raw),
        target: "compare",
        met: undefined,
      },
    ];
    for (const tree of phaseRuns) {
      const list = phases.get(tree)!;
      if (list.length === 0) continue;
      const label = tree ? ` (${tree})` : "";
      for (const key of ["boot", "load", "connect", "command"] as const) {
        const what = {
          boot: "runtime start until the entry runs",
          load: "module load: qmp.ts + exec.ts graph",
          connect: "connect: dial, greeting, negotiate",
          command: "query-status round trip",
        }[key];
        rows.push({
          figure: `  ${what}${label}`,
          ours: ms(median(list.map((p) => p[key]))),
          baseline: "—",
          ratio: NaN,
          target: "report",
          met: undefined,
        });
      }
    }
    for (const v of [empty, ...extra]) {
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
  const out = await bench({
    rounds: Number(flag("rounds") ?? (quick ? 4 : 10)),
    compareTree: flag("compare-tree"),
  });
  emit(out.rows, out.notes);
}
