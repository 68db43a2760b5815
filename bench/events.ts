/**
 * Event throughput: a fake QMP server (`bench/baselines/event_flood.py`, its
 * own process, on a unix socket) floods N small events in QEMU's exact format
 * (STOP, RESUME, RESET with data); one consumer counts them.
 *
 * - ours: `connect()`, one `qmp.events()` consumer in a `for await` loop
 *   (default listener options: 1000-event buffer, overflow = error);
 * - ours, big buffer: the same with `bufferSize: 1e7` (never overflows: shows
 *   the throughput and memory when the client reads ahead of its consumer);
 * - raw: a Deno socket read loop, chunk decoded once, split on CRLF,
 *   `JSON.parse` of each line;
 * - null: reads and counts newlines only (the producer's ceiling).
 *
 * Every consumer runs in a fresh Deno process (so its peak RSS is its own;
 * sampled with `Deno.memoryUsage()` every 8,192 events), ours and raw
 * interleaved; medians. The clock starts before the command that triggers
 * the flood and stops at the N-th event.
 *
 * Also the client CPU alone, with no socket (far less noisy on a shared
 * machine): the framer, and each `--compare` copy of it, fed the same
 * QEMU-format event bytes in 64 KiB chunks, vs a CRLF split + `JSON.parse`
 * of each line; 9 rounds interleaved in one process, timed in process CPU
 * time (`cpuMs`), medians.
 *
 *   deno run -A bench/events.ts [--n=1000000] [--runs=5] [--quick] [--json]
 *       [--compare=LIBDIR[,LIBDIR...]]   (also run ours with patched copies of lib/)
 *
 * @module
 */
import {
  bytes,
  cpuMs,
  DENO_FLAGS,
  emit,
  flag,
  here,
  loadLib,
  median,
  num,
  python,
  type Row,
} from "./main.ts";

/** A consumer process: which reader, and for ours the lib dir and buffer size. */
interface Consumer {
  label: string;
  kind: "ours" | "raw" | "null";
  lib?: string;
  buffer?: number;
}
interface Result {
  perSecond: number;
  peakRss: number;
  startRss: number;
  count: number;
}

const SAMPLE = 8192;

async function consumeOurs(address: string, n: number, bufferSize?: number): Promise<Result> {
  const { client } = await loadLib();
  const startRss = Deno.memoryUsage().rss;
  let peakRss = startRss;
  await using qmp = await client.connect(address, { timeout: "10s" });
  const events = qmp.events(bufferSize ? { bufferSize } : {});
  let count = 0;
  const t0 = performance.now();
  await qmp.execute("query-status"); // the fake server's cue to start
  for await (const _ of events) {
    if (++count % SAMPLE === 0) peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
    if (count === n) break;
  }
  const seconds = (performance.now() - t0) / 1000;
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  return { perSecond: count / seconds, peakRss, startRss, count };
}

async function consumeRaw(path: string, n: number, parse: boolean): Promise<Result> {
  const startRss = Deno.memoryUsage().rss;
  let peakRss = startRss;
  const conn = await Deno.connect({ transport: "unix", path });
  const buf = new Uint8Array(64 * 1024);
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let text = "";
  /** Reads until a line is complete; returns it. */
  const line = async (): Promise<string> => {
    while (true) {
      const nl = text.indexOf("\n");
      if (nl >= 0) {
        const l = text.slice(0, nl);
        text = text.slice(nl + 1);
        return l;
      }
      const r = await conn.read(buf);
      if (r === null) throw new Error("raw consumer: connection closed");
      text += decoder.decode(buf.subarray(0, r), { stream: true });
    }
  };
  try {
    await line(); // greeting
    await conn.write(encoder.encode('{"execute": "qmp_capabilities", "id": 1}'));
    await line();
    let count = 0;
    const t0 = performance.now();
    await conn.write(encoder.encode('{"execute": "query-status", "id": 2}'));
    await line(); // the reply comes before the flood
    let nextSample = SAMPLE;
    while (count < n) {
      if (parse) {
        let start = 0;
        for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
          const msg = JSON.parse(text.slice(start, nl));
          if (typeof msg.event === "string") count++;
          start = nl + 1;
        }
        text = text.slice(start);
      } else {
        count += text.split("\n").length - 1;
        text = "";
      }
      if (count >= nextSample) {
        peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
        nextSample += SAMPLE;
      }
      if (count >= n) break;
      const r = await conn.read(buf);
      if (r === null) throw new Error("raw consumer: connection closed");
      if (parse) text += decoder.decode(buf.subarray(0, r), { stream: true });
      else for (let i = 0; i < r; i++) if (buf[i] === 0x0a) count++;
    }
    const seconds = (performance.now() - t0) / 1000;
    peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
    return { perSecond: count / seconds, peakRss, startRss, count };
  } finally {
    conn.close();
  }
}

async function spawnConsumer(c: Consumer, path: string, n: number): Promise<Result> {
  const args = ["run", ...DENO_FLAGS, here("events.ts"), `--consume=${c.kind}`, `--socket=${path}`];
  args.push(`--n=${n}`);
  if (c.lib) args.push(`--lib=${c.lib}`);
  if (c.buffer) args.push(`--buffer=${c.buffer}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).split("\n").find((l) => l.includes("Error"));
    throw new Error(`${c.label}: ${err ?? `exit code ${out.code}`}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim());
}

/** `n` events in event_flood.py's format (QEMU's): STOP, RESUME, STOP, RESET with data. */
function floodBytes(n: number): Uint8Array {
  const sec = Math.floor(Date.now() / 1000);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const ts = `{"seconds": ${sec}, "microseconds": ${(123456 + i) % 1000000}}`;
    lines.push(
      i % 4 === 3
        ? `{"timestamp": ${ts}, "event": "RESET", "data": {"guest": false, ` +
          `"reason": "host-qmp-system-reset"}}\r\n`
        : `{"timestamp": ${ts}, "event": "${i % 2 === 0 ? "STOP" : "RESUME"}"}\r\n`,
    );
  }
  return new TextEncoder().encode(lines.join(""));
}

/**
 * Client CPU only: events/s of each framer (ours first, then `--compare` copies)
 * and of split + JSON.parse on the same bytes, interleaved rounds; medians.
 */
async function offline(compare: string[], n = 200_000, rounds = 9) {
  const framers = [
    (await loadLib()).framing.JsonObjectFramer,
    ...(await Promise.all(compare.map(loadLib))).map((l) => l.framing.JsonObjectFramer),
  ];
  const data = floodBytes(n);
  const chunk = 64 * 1024;
  const rates = framers.map(() => [] as number[]);
  const raw: number[] = [];
  for (let r = 0; r <= rounds; r++) {
    // Order alternates between rounds, so neither copy always runs first (GC, caches).
    const order = framers.map((_, k) => k);
    if (r % 2) order.reverse();
    order.forEach((k) => {
      const F = framers[k];
      const t0 = cpuMs();
      const f = new F();
      let got = 0;
      for (let off = 0; off < data.length; off += chunk) {
        got += f.push(data.subarray(off, Math.min(data.length, off + chunk))).length;
      }
      if (got !== n) throw new Error(`framer produced ${got} of ${n} events`);
      if (r > 0) rates[k].push(n / ((cpuMs() - t0) / 1000)); // round 0 warms up
    });
    const t0 = cpuMs();
    const decoder = new TextDecoder();
    let got = 0;
    let text = "";
    for (let off = 0; off < data.length; off += chunk) {
      text += decoder.decode(data.subarray(off, Math.min(data.length, off + chunk)), {
        stream: true,
      });
      let start = 0;
      for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
        if (typeof JSON.parse(text.slice(start, nl)).event === "string") got++;
        start = nl + 1;
      }
      text = text.slice(start);
    }
    if (got !== n) throw new Error(`raw parse produced ${got} of ${n} events`);
    if (r > 0) raw.push(n / ((cpuMs() - t0) / 1000));
  }
  return { framers: rates.map(median), raw: median(raw), all: rates, rawAll: raw };
}

/** Starts the producer, runs the consumers interleaved, returns rows. */
export async function bench(options: { n: number; runs: number; compare?: string[] }) {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
  const path = `${dir}/flood.sock`;
  const producer = new Deno.Command(await python(), {
    args: [here("baselines/event_flood.py"), path, String(options.n)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = producer.stdout.getReader();
    const first = await reader.read(); // "ready"
    reader.releaseLock();
    if (first.done) throw new Error("event_flood.py exited early");
    const ours: Consumer = { label: "ours", kind: "ours" };
    const big: Consumer = { label: "ours, bufferSize 1e7", kind: "ours", buffer: 10_000_000 };
    const raw: Consumer = { label: "raw", kind: "raw" };
    const patched: Consumer[] = (options.compare ?? []).map((lib) => ({
      label: `lib=${lib}`,
      kind: "ours",
      lib,
    }));
    const all = [ours, raw, big, ...patched];
    const res = new Map<Consumer, Result[]>(all.map((c) => [c, []]));
    const failures: string[] = [];
    for (let r = 0; r < options.runs; r++) {
      for (const c of r % 2 === 0 ? all : [...all].reverse()) {
        try {
          res.get(c)!.push(await spawnConsumer(c, path, options.n));
        } catch (err) {
          if (c === raw) throw err;
          // A failed run (e.g. EventOverflowError) counts as 0 events/s.
          res.get(c)!.push({ perSecond: 0, peakRss: NaN, startRss: NaN, count: 0 });
          if (!failures.includes((err as Error).message)) failures.push((err as Error).message);
        }
      }
    }
    const ceiling = await spawnConsumer({ label: "null", kind: "null" }, path, options.n);
    const med = (c: Consumer, k: keyof Result) => median(res.get(c)!.map((x) => x[k]));
    const rate = (x: number) => `${num(x)}/s`;
    const failed = (c: Consumer) => res.get(c)!.filter((x) => x.count === 0).length;
    const throughputRow = (figure: string, c: Consumer): Row => ({
      figure,
      ours: rate(med(c, "perSecond")) +
        (failed(c) ? ` (${failed(c)}/${options.runs} runs overflowed)` : ""),
      baseline: rate(med(raw, "perSecond")),
      ratio: med(c, "perSecond") / med(raw, "perSecond"),
      target: "≥ 500,000/s",
      met: med(c, "perSecond") >= 500_000,
    });
    const rssRow = (figure: string, c: Consumer): Row => ({
      figure,
      ours: bytes(med(c, "peakRss")),
      baseline: bytes(med(raw, "peakRss")),
      ratio: med(c, "peakRss") / med(raw, "peakRss"),
      target: "bounded",
      met: undefined,
    });
    const rows: Row[] = [
      throughputRow("events() throughput, 1 consumer (fake server)", ours),
      rssRow("  peak RSS of the consumer process", ours),
      throughputRow("  same, events({ bufferSize: 1e7 })", big),
      rssRow("  peak RSS, bufferSize 1e7", big),
    ];
    for (const p of patched) {
      rows.push(throughputRow(`  events(), ${p.lib}`, p), rssRow(`  peak RSS, ${p.lib}`, p));
    }
    const cpu = await offline(options.compare ?? []);
    const cpuRow = (figure: string, k: number): Row => ({
      figure,
      ours: rate(cpu.framers[k]),
      baseline: rate(cpu.raw),
      ratio: cpu.framers[k] / cpu.raw,
      target: "—",
      met: undefined,
    });
    rows.push(cpuRow("  client CPU only: framer vs split+parse", 0));
    (options.compare ?? []).forEach((lib, i) =>
      rows.push(cpuRow(`  client CPU only, ${lib}`, i + 1))
    );
    const each = (c: Consumer) => res.get(c)!.map((x) => num(x.perSecond)).join(" ");
    const notes = [
      `N=${num(options.n)} events per run, ${options.runs} runs interleaved; ` +
      all.map((c) => `${c.label} [${each(c)}]`).join(", ") +
      `; producer ceiling (read + count newlines) ${rate(ceiling.perSecond)}; ` +
      `RSS at start ${bytes(med(raw, "startRss"))}`,
      `client CPU only: ${num(200_000)} events in 64 KiB chunks, 9 rounds interleaved; ` +
      [["ours", cpu.all[0]], ...(options.compare ?? []).map((l, i) => [l, cpu.all[i + 1]])]
        .map(([l, xs]) => `${l} [${(xs as number[]).map((x) => num(x)).join(" ")}]`).join(", ") +
      `, split+parse [${cpu.rawAll.map((x) => num(x)).join(" ")}]`,
      ...failures,
    ];
    return { rows, notes };
  } finally {
    try {
      producer.kill("SIGKILL");
    } catch { /* gone */ }
    await producer.status;
    await producer.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const consume = flag("consume") as Consumer["kind"] | undefined;
  if (consume) {
    const path = flag("socket")!;
    const n = Number(flag("n"));
    const buffer = flag("buffer") ? Number(flag("buffer")) : undefined;
    const r = consume === "ours"
      ? await consumeOurs(`unix:${path}`, n, buffer)
      : await consumeRaw(path, n, consume === "raw");
    console.log(JSON.stringify(r));
  } else {
    const quick = flag("quick") !== undefined;
    const out = await bench({
      n: Number(flag("n") ?? (quick ? 300_000 : 1_000_000)),
      runs: Number(flag("runs") ?? (quick ? 3 : 5)),
      compare: flag("compare")?.split(",").filter(Boolean),
    });
    emit(out.rows, out.notes);
  }
}
