/**
 * Round trips of `query-status` against a real QEMU (`-machine none`, started
 * with `launch()`): qmpkit vs the raw Python socket client of
 * `bench/raw_baseline.py` (writes a fixed request, reads one reply line; no
 * JSON parsing), interleaved in the same run, medians.
 *
 * - sequential: one command at a time (`await execute()` in a loop);
 * - pipelined: oob enabled, 8 in flight (8 workers each awaiting in a loop;
 *   QEMU queues at most 8 in-band commands), vs the raw pipelined client.
 *
 * Also a raw Deno client writing exactly qmpkit's bytes (with ids): QEMU reads
 * requests one byte per read, so the request length sets the rate, and the gap
 * between that client and ours is the library's own cost.
 *
 * The benchmark talks to a second QMP monitor of the launched VM (`-qmp` added
 * through `args`), so the launcher keeps its own connection for shutdown.
 *
 *   deno run -A bench/pipelined.ts [--n=4000] [--runs=5] [--quick] [--json]
 *                                  [--compare=LIBDIR[,LIBDIR...]]
 *
 * @module
 */
import { launch } from "../lib/machine.ts";
import {
  emit,
  flag,
  here,
  type Lib,
  loadLib,
  median,
  num,
  python,
  queryStatusRate,
  ratioRow,
  ROUND_TRIP_WINDOW,
  type RoundTripMode,
  type Row,
  runJson,
} from "./main.ts";

type Mode = RoundTripMode;
const WINDOW = ROUND_TRIP_WINDOW;

/** Our client: `n` timed round trips after `warmup`, on a fresh connection; returns per second. */
export async function ours(lib: Lib, address: string, mode: Mode, n: number, warmup: number) {
  await using qmp = await lib.client.connect(address, { timeout: "10s", oob: mode === "pipe" });
  return await queryStatusRate(qmp, mode, n, warmup);
}

/**
 * A raw Deno client writing exactly the bytes qmpkit writes
 * (`{"execute":"query-status","id":N}`, N counting up) and counting reply
 * lines: the client's own overhead is the gap between this and ours.
 */
export async function rawSameBytes(path: string, mode: Mode, n: number, warmup: number) {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const enc = new TextEncoder();
    const buf = new Uint8Array(64 * 1024);
    let lines = 0;
    const line = async () => {
      while (lines === 0) {
        const r = await conn.read(buf);
        if (r === null) throw new Error("raw Deno client: connection closed");
        for (let i = 0; i < r; i++) if (buf[i] === 0x0a) lines++;
      }
      lines--;
    };
    let id = 0;
    const send = async (msg: Record<string, unknown>) => {
      const bytes = enc.encode(JSON.stringify({ ...msg, id: ++id }));
      let off = 0;
      while (off < bytes.length) off += await conn.write(bytes.subarray(off));
    };
    const status = { execute: "query-status" };
    await line(); // greeting
    await send({
      execute: "qmp_capabilities",
      ...(mode === "pipe" ? { arguments: { enable: ["oob"] } } : {}),
    });
    await line();
    const batch = async (count: number) => {
      if (mode === "seq") {
        for (let i = 0; i < count; i++) {
          await send(status);
          await line();
        }
        return;
      }
      let sent = 0;
      while (sent < Math.min(WINDOW, count)) sent++, await send(status);
      for (let i = 0; i < count; i++) {
        await line();
        if (sent < count) sent++, await send(status);
      }
    };
    await batch(warmup);
    const t0 = performance.now();
    await batch(n);
    return n / ((performance.now() - t0) / 1000);
  } finally {
    conn.close();
  }
}

/** The raw Python client (another engineer's bench/raw_baseline.py); returns per second. */
export async function raw(socketPath: string, mode: Mode, n: number, warmup: number) {
  const out = await runJson<{ per_second: number }>(await python(), [
    here("raw_baseline.py"),
    socketPath,
    String(n),
    mode,
    String(warmup),
  ], 60_000);
  return out.per_second;
}

/** Runs both modes, interleaved `runs` times; returns table rows. */
export async function bench(
  options: { n: number; runs: number; warmup: number; compare?: string[] },
): Promise<{ rows: Row[]; notes: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const sock = `${dir}/bench.sock`;
  try {
    await using _vm = await launch({
      name: "bench-roundtrip",
      args: ["-qmp", `unix:${sock},server=on,wait=off`],
      timeout: "20s",
    });
    const lib = await loadLib();
    const patched = await Promise.all((options.compare ?? []).map((d) => loadLib(d)));
    const { n, warmup } = options;
    type Side = { label: string; run: (mode: Mode) => Promise<number> };
    const sides: Side[] = [
      { label: "ours", run: (m) => ours(lib, `unix:${sock}`, m, n, warmup) },
      { label: "raw", run: (m) => raw(sock, m, n, warmup) },
      { label: "same-bytes", run: (m) => rawSameBytes(sock, m, n, warmup) },
      ...patched.map((l, i) => ({
        label: options.compare![i],
        run: (m: Mode) => ours(l, `unix:${sock}`, m, n, warmup),
      })),
    ];
    const res = new Map<string, number[]>();
    for (let r = 0; r < options.runs; r++) {
      for (const mode of ["seq", "pipe"] as const) {
        // Rotate the order: no side always gets the warmer (or busier) moment.
        const k = r % sides.length;
        for (const side of [...sides.slice(k), ...sides.slice(0, k)]) {
          const key = `${mode}:${side.label}`;
          res.set(key, [...(res.get(key) ?? []), await side.run(mode)]);
        }
      }
    }
    const med = (mode: Mode, label: string) => median(res.get(`${mode}:${label}`)!);
    const fmt = (x: number) => `${num(x)}/s`;
    const rows: Row[] = [];
    for (const mode of ["seq", "pipe"] as const) {
      const what = mode === "seq"
        ? "sequential query-status (QEMU)"
        : "pipelined query-status, oob, 8 in flight";
      rows.push(
        ratioRow(what, med(mode, "ours"), med(mode, "raw"), fmt, { op: "≥", value: 0.95 }),
        {
          figure: "  raw Deno client, same bytes as ours",
          ours: fmt(med(mode, "same-bytes")),
          baseline: fmt(med(mode, "raw")),
          ratio: med(mode, "same-bytes") / med(mode, "raw"),
          target: "—",
          met: undefined,
        },
        {
          figure: "  ours vs raw Deno, same bytes",
          ours: fmt(med(mode, "ours")),
          baseline: fmt(med(mode, "same-bytes")),
          ratio: med(mode, "ours") / med(mode, "same-bytes"),
          target: "—",
          met: undefined,
        },
      );
      for (const dirName of options.compare ?? []) {
        rows.push({
          figure: `  ${dirName}`,
          ours: fmt(med(mode, dirName)),
          baseline: fmt(med(mode, "raw")),
          ratio: med(mode, dirName) / med(mode, "raw"),
          target: "≥ 0.95×",
          met: med(mode, dirName) / med(mode, "raw") >= 0.95,
        });
      }
    }
    const each = (key: string) => res.get(key)!.map((x) => num(x)).join(" ");
    const notes = [
      `round trips: N=${n} (+${warmup} warm-up) per run, ${options.runs} runs, order rotating; ` +
      [...res.keys()].map((k) => `${k} [${each(k)}]`).join("; "),
      `raw = bench/raw_baseline.py, request {"execute": "query-status"} (27 bytes, no id); ` +
      `ours sends {"execute":"query-status","id":N} (33-36 bytes); QEMU reads input one byte ` +
      `per read, so request length sets the rate`,
    ];
    return { rows, notes };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const quick = flag("quick") !== undefined;
  const out = await bench({
    n: Number(flag("n") ?? (quick ? 1000 : 4000)),
    runs: Number(flag("runs") ?? (quick ? 3 : 5)),
    warmup: 500,
    compare: flag("compare")?.split(",").filter(Boolean),
  });
  emit(out.rows, out.notes);
}
