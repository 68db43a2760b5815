/**
 * Launch start-up: spawn → negotiated QMP client, `-machine none -accel tcg`.
 *
 * Variants, interleaved round by round (order rotating), medians:
 * - `launch()` of this tree's `lib/` (or `--lib=DIR`);
 * - `launch()` of `--compare=DIR` (e.g. a checkout of the commit before a change);
 * - `poll`: the method launch() used before accept mode, reproduced raw: QEMU with
 *   `-qmp unix:S,server=on,wait=off`, then `connect(S, { retry: true })` (10 ms backoff doubling);
 * - `accept`: the accept-mode method raw: `listen(S)`, QEMU with `-qmp unix:S`, `accept()`.
 * Also how long `launch()` takes to fail when QEMU exits at once (an unknown option).
 *
 *   deno run -A bench/launch.ts [--rounds=15] [--quick] [--json] [--compare=DIR]
 *
 * @module
 */
import { connect } from "../lib/client.ts";
import { listen } from "../lib/server.ts";
import { emit, flag, loadLib, median, num, ratioRow, type Row } from "./main.ts";

const QEMU = "qemu-system-x86_64";
const BASE = ["-machine", "none", "-accel", "tcg", "-display", "none", "-monitor", "none"];

type Variant = { name: string; run: () => Promise<number> };

function spawn(args: string[]): Deno.ChildProcess {
  return new Deno.Command(QEMU, {
    args: [...BASE, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
  await child.status;
}

async function poll(): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const sock = `${dir}/qmp.sock`;
  const t0 = performance.now();
  const child = spawn(["-qmp", `unix:${sock},server=on,wait=off`]);
  try {
    const qmp = await connect(`unix:${sock}`, { retry: true, timeout: "20s" });
    const ms = performance.now() - t0;
    await qmp.close();
    return ms;
  } finally {
    await stop(child);
    await Deno.remove(dir, { recursive: true });
  }
}

async function accept(): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const t0 = performance.now();
  const server = await listen(`unix:${dir}/qmp.sock`);
  const child = spawn(["-qmp", server.qemuArg]);
  try {
    const qmp = await server.accept({ timeout: "20s" });
    const ms = performance.now() - t0;
    await qmp.close();
    return ms;
  } finally {
    await server.close();
    await stop(child);
    await Deno.remove(dir, { recursive: true });
  }
}

function launchVariant(lib: Awaited<ReturnType<typeof loadLib>>): () => Promise<number> {
  return async () => {
    const t0 = performance.now();
    const vm = await lib.machine.launch({ accel: "tcg", timeout: "20s" });
    const ms = performance.now() - t0;
    await vm.kill();
    return ms;
  };
}

function failingVariant(lib: Awaited<ReturnType<typeof loadLib>>): () => Promise<number> {
  return async () => {
    const t0 = performance.now();
    try {
      const vm = await lib.machine.launch({ accel: "tcg", args: ["-no-such-option"] });
      await vm.kill();
      throw new Error("launch() of a QEMU with a bad option succeeded");
    } catch (e) {
      if (!(e instanceof Error) || e.name !== "LaunchError") throw e;
    }
    return performance.now() - t0;
  };
}

async function main(): Promise<void> {
  const quick = flag("quick") !== undefined;
  const rounds = Number(flag("rounds") ?? (quick ? 7 : 15));
  const ours = await loadLib();
  const compareDir = flag("compare");
  const before = compareDir ? await loadLib(compareDir) : undefined;
  const variants: Variant[] = [
    { name: "launch()", run: launchVariant(ours) },
    ...(before ? [{ name: "launch() --compare", run: launchVariant(before) }] : []),
    { name: "poll", run: poll },
    { name: "accept", run: accept },
    { name: "launch() failing", run: failingVariant(ours) },
    ...(before ? [{ name: "launch() failing --compare", run: failingVariant(before) }] : []),
  ];
  const times = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (const v of variants) await v.run(); // warm-up: caches, JIT, the accel probe
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + r) % variants.length];
      times.get(v.name)!.push(await v.run());
    }
  }
  const m = (name: string) => median(times.get(name)!);
  const ms = (n: number) => `${num(n, 1)} ms`;
  const rows: Row[] = [
    ratioRow("spawn → negotiated: accept vs poll (raw)", m("accept"), m("poll"), ms, {
      op: "≤",
      value: 1,
    }),
  ];
  if (before) {
    rows.push(
      ratioRow(
        "launch() spawn → negotiated vs --compare",
        m("launch()"),
        m("launch() --compare"),
        ms,
        {
          op: "≤",
          value: 1,
        },
      ),
      {
        figure: "launch() failing (bad option) vs --compare",
        ours: ms(m("launch() failing")),
        baseline: ms(m("launch() failing --compare")),
        ratio: m("launch() failing") / m("launch() failing --compare"),
        target: "report",
        met: undefined,
      },
    );
  } else {
    rows.push(
      {
        figure: "launch() spawn → negotiated",
        ours: ms(m("launch()")),
        baseline: "—",
        ratio: NaN,
        target: "report",
        met: undefined,
      },
      {
        figure: "launch() failing (bad option)",
        ours: ms(m("launch() failing")),
        baseline: "—",
        ratio: NaN,
        target: "report",
        met: undefined,
      },
    );
  }
  const notes = [
    `${rounds} interleaved rounds after one warm-up each; QEMU ${BASE.join(" ")}`,
    [...times].map(([k, v]) => `${k} [${v.map((x) => num(x)).join(" ")}]`).join("; "),
  ];
  emit(rows, notes);
}

if (import.meta.main) await main();
