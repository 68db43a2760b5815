/**
 * `query-qmp-schema` (~200 KB reply) against a real QEMU (`-machine none`,
 * started with `launch()`): time of `qmp.execute("query-qmp-schema")` vs a raw
 * Deno client on the same QEMU (write the request, read until CRLF into one
 * buffer, decode, `JSON.parse`). The VM gets two extra QMP monitors, one per
 * client, so the calls interleave one by one (A B A B ...); medians.
 *
 * Also measures the client-side cost alone, with no socket: the framer fed
 * the captured reply in 64 KiB chunks vs `JSON.parse(decode(bytes))`, timed
 * in process CPU time (`cpuMs`, less disturbed by a busy machine).
 *
 *   deno run -A bench/schema.ts [--iters=60] [--quick] [--json] [--compare=LIBDIR[,...]]
 *
 * @module
 */
import { connect } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import { cpuMs, emit, flag, type Lib, loadLib, median, num, ratioRow } from "./main.ts";

const encoder = new TextEncoder();

/** A raw client: one socket, manual negotiation, a reusable receive buffer. */
class RawClient {
  #conn: Deno.UnixConn;
  #buf = new Uint8Array(1024 * 1024);
  #len = 0;
  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  static async open(path: string): Promise<RawClient> {
    const c = new RawClient(await Deno.connect({ transport: "unix", path }));
    await c.#line(); // greeting
    await c.call('{"execute": "qmp_capabilities"}');
    return c;
  }

  /** Writes `request` and returns the parsed reply line; the last read bytes stay in `last`. */
  async call(request: string): Promise<unknown> {
    const req = encoder.encode(request);
    let off = 0;
    while (off < req.length) off += await this.#conn.write(req.subarray(off));
    return JSON.parse(await this.#line());
  }

  /** The bytes of the last reply (for the offline measurement). */
  get last(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }

  async #line(): Promise<string> {
    this.#len = 0;
    while (true) {
      if (this.#len === this.#buf.length) {
        const next = new Uint8Array(this.#buf.length * 2);
        next.set(this.#buf);
        this.#buf = next;
      }
      const n = await this.#conn.read(this.#buf.subarray(this.#len));
      if (n === null) throw new Error("raw client: connection closed");
      this.#len += n;
      if (
        this.#len >= 2 && this.#buf[this.#len - 2] === 0x0d && this.#buf[this.#len - 1] === 0x0a
      ) {
        return new TextDecoder().decode(this.#buf.subarray(0, this.#len));
      }
    }
  }

  close() {
    this.#conn.close();
  }
}

type Framer = Lib["framing"]["JsonObjectFramer"];

/**
 * Client-side CPU only: each framer, then decode + JSON.parse, on the same
 * bytes, interleaved; median ms per reply.
 */
function offline(reply: Uint8Array, iters: number, framers: Framer[]) {
  const times = framers.map(() => [] as number[]);
  const raw: number[] = [];
  const chunk = 64 * 1024;
  for (let i = 0; i < iters; i++) {
    // Order alternates between rounds, so neither copy always runs first (GC, caches).
    const order = framers.map((_, k) => k);
    if (i % 2) order.reverse();
    order.forEach((k) => {
      const F = framers[k];
      const t0 = cpuMs();
      const f = new F();
      let got = 0;
      for (let off = 0; off < reply.length; off += chunk) {
        got += f.push(reply.subarray(off, Math.min(reply.length, off + chunk))).length;
      }
      if (got !== 1) throw new Error(`framer produced ${got} messages`);
      times[k].push(cpuMs() - t0);
    });
    const t0 = cpuMs();
    JSON.parse(new TextDecoder().decode(reply));
    raw.push(cpuMs() - t0);
  }
  return { framers: times.map(median), raw: median(raw) };
}

/** Runs the interleaved measurement. */
export async function bench(options: { iters: number; warmup: number; compare?: string[] }) {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const sockA = `${dir}/a.sock`;
  const sockB = `${dir}/b.sock`;
  try {
    await using _vm = await launch({
      name: "bench-schema",
      args: [
        "-qmp",
        `unix:${sockA},server=on,wait=off`,
        "-qmp",
        `unix:${sockB},server=on,wait=off`,
      ],
      timeout: "20s",
    });
    await using qmp = await connect(`unix:${sockA}`, { timeout: "10s" });
    const raw = await RawClient.open(sockB);
    try {
      const ours: number[] = [];
      const base: number[] = [];
      let entries = 0;
      const one = async (which: "ours" | "raw", record: boolean) => {
        const t0 = performance.now();
        if (which === "ours") {
          entries = (await qmp.execute("query-qmp-schema")).length;
        } else {
          await raw.call('{"execute": "query-qmp-schema", "id": 1}');
        }
        const ms = performance.now() - t0;
        if (record) (which === "ours" ? ours : base).push(ms);
      };
      for (let i = 0; i < options.warmup; i++) {
        await one("ours", false);
        await one("raw", false);
      }
      for (let i = 0; i < options.iters; i++) {
        const order = i % 2 === 0 ? ["ours", "raw"] as const : ["raw", "ours"] as const;
        for (const w of order) await one(w, true);
      }
      const reply = raw.last;
      const libs = [await loadLib(), ...await Promise.all((options.compare ?? []).map(loadLib))];
      const cpu = offline(reply, options.iters * 2, libs.map((l) => l.framing.JsonObjectFramer));
      const ms = (x: number) => `${num(x, 2)} ms`;
      return {
        rows: [
          ratioRow("query-qmp-schema round trip (QEMU)", median(ours), median(base), ms, {
            op: "≤",
            value: 1.3,
          }),
          {
            ...ratioRow("  client CPU only: framer+parse vs parse", cpu.framers[0], cpu.raw, ms, {
              op: "≤",
              value: 1.3,
            }),
            target: "—",
            met: undefined,
          },
          ...(options.compare ?? []).map((dir, i) => ({
            ...ratioRow(`  client CPU only, ${dir}`, cpu.framers[i + 1], cpu.raw, ms, {
              op: "≤",
              value: 1.3,
            }),
            target: "—",
            met: undefined,
          })),
        ],
        notes: [
          `schema: ${num(reply.length)}-byte reply, ${entries} entries; ${options.iters} ` +
          `interleaved calls each (+${options.warmup} warm-up); offline = the same bytes fed ` +
          `in 64 KiB chunks, no socket`,
        ],
      };
    } finally {
      raw.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const quick = flag("quick") !== undefined;
  const out = await bench({
    iters: Number(flag("iters") ?? (quick ? 20 : 60)),
    warmup: 5,
    compare: flag("compare")?.split(",").filter(Boolean),
  });
  emit(out.rows, out.notes);
}
