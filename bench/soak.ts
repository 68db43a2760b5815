/**
 * Soak: a long run of commands and events against one real QEMU (`-M pc -S`),
 * with periodic reconnects, printing the client's RSS and open file
 * descriptors as it goes; both must stay flat. Not part of CI.
 *
 * Each round pipelines `query-status`, `query-name`, `qom-list /machine`,
 * `human-monitor-command "info version"`, `cont` and `stop` (QEMU runs them
 * in order); the RESUME and STOP events are consumed by an `events()` iterator. A round is 8
 * operations (6 commands + 2 events); `--count` counts operations. Every
 * `count / reconnects` operations the connection is closed and a new one is
 * opened to the same socket.
 *
 *   deno run --allow-all bench/soak.ts [--count=1000000] [--every=100000] [--reconnects=100]
 *
 * `--allow-all` because Deno reads /proc (for the fd count) only with it.
 * Exits 1 when the fd count or RSS grew (see `--max-rss-growth`, MiB).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connect, type QmpClient } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string", default: "1000000" },
    every: { type: "string", default: "100000" },
    reconnects: { type: "string", default: "100" },
    "max-rss-growth": { type: "string", default: "64" },
  },
});
const COUNT = Number(values.count);
const EVERY = Number(values.every);
const RECONNECTS = Number(values.reconnects);
const MAX_RSS_GROWTH = Number(values["max-rss-growth"]) * 1024 * 1024;
for (const [name, v] of [["count", COUNT], ["every", EVERY], ["reconnects", RECONNECTS]]) {
  if (!Number.isInteger(v) || (v as number) < (name === "reconnects" ? 0 : 1)) {
    console.error(`--${name} must be a positive integer`);
    Deno.exit(2);
  }
}
const OPS_PER_ROUND = 8;
const MiB = 1024 * 1024;

function openFds(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

function qemuRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) * 1024 : NaN;
}

interface Sample {
  ops: number;
  seconds: number;
  rss: number;
  heap: number;
  fds: number;
  reconnects: number;
  qemuRss: number;
  qemuFds: number;
}

const vm = await launch({ machine: "pc", paused: true, memory: 64, accel: "tcg", timeout: "30s" });
const address = `unix:${vm.socketPath}`;
let qmp: QmpClient = vm.qmp;
let events = 0;
let expectedEvents = 0;
let consumer: Promise<void> = Promise.resolve();
let order = "";

/** Starts the events() consumer of the current connection. */
function consume(client: QmpClient): Promise<void> {
  const it = client.events({ names: ["STOP", "RESUME"] });
  return (async () => {
    for await (const ev of it) {
      events++;
      // Each round: RESUME then STOP, strictly alternating.
      const want = order === "RESUME" ? "STOP" : "RESUME";
      if (ev.event !== want) throw new Error(`event ${ev.event} where ${want} was due`);
      order = ev.event;
    }
  })();
}

/** Waits (bounded) until the consumer has seen every event so far. */
async function caughtUp(): Promise<void> {
  const end = Date.now() + 10_000;
  while (events < expectedEvents) {
    if (Date.now() > end) throw new Error(`events: ${events} consumed, ${expectedEvents} due`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

const samples: Sample[] = [];
let ops = 0;
let reconnects = 0;
const t0 = performance.now();
const reconnectEvery = RECONNECTS > 0 ? Math.max(OPS_PER_ROUND, Math.floor(COUNT / RECONNECTS)) : 0;
let nextReconnect = reconnectEvery || Infinity;
let nextSample = EVERY;

function sample(): void {
  const mem = Deno.memoryUsage();
  const s: Sample = {
    ops,
    seconds: (performance.now() - t0) / 1000,
    rss: mem.rss,
    heap: mem.heapUsed,
    fds: openFds(),
    reconnects,
    qemuRss: qemuRss(vm.pid),
    qemuFds: openFds(vm.pid),
  };
  samples.push(s);
  console.log(
    [
      `ops ${String(s.ops).padStart(8)}`,
      `${s.seconds.toFixed(1).padStart(6)} s`,
      `${Math.round(s.ops / s.seconds).toString().padStart(5)} ops/s`,
      `RSS ${(s.rss / MiB).toFixed(1).padStart(6)} MiB`,
      `heap ${(s.heap / MiB).toFixed(1).padStart(5)} MiB`,
      `fds ${s.fds}`,
      `reconnects ${s.reconnects}`,
      `QEMU RSS ${(s.qemuRss / MiB).toFixed(1)} MiB, fds ${s.qemuFds}`,
    ].join("  "),
  );
}

let failure: unknown;
try {
  console.log(
    `soak: ${COUNT} ops (${OPS_PER_ROUND}/round: 6 commands + STOP/RESUME), ` +
      `${RECONNECTS} reconnects, QEMU pid ${vm.pid} (${vm.accel}, -M pc -S)`,
  );
  consumer = consume(qmp);
  sample();
  while (ops < COUNT) {
    // Pipelined: QEMU runs them in order (oob off), so cont then stop give RESUME then STOP.
    const [status, name, list, version] = await Promise.all([
      qmp.execute("query-status"),
      qmp.execute("query-name"),
      qmp.execute("qom-list", { path: "/machine" }),
      qmp.execute("human-monitor-command", { "command-line": "info version" }),
      qmp.execute("cont"),
      qmp.execute("stop"),
    ]);
    if (status.running || !("name" in name) || list.length < 5 || !version.startsWith("7.2")) {
      throw new Error(
        `unexpected replies: ${JSON.stringify([status, name, list.length, version])}`,
      );
    }
    expectedEvents += 2;
    ops += OPS_PER_ROUND;
    if (ops >= nextSample) {
      await caughtUp();
      sample();
      nextSample += EVERY;
    }
    if (ops >= nextReconnect && ops < COUNT) {
      await caughtUp();
      await qmp.close();
      await consumer;
      qmp = await connect(address, { timeout: "10s", retry: true });
      consumer = consume(qmp);
      reconnects++;
      nextReconnect += reconnectEvery;
    }
  }
  await caughtUp();
  if (samples.at(-1)?.ops !== ops) sample();
} catch (e) {
  failure = e;
} finally {
  await qmp.close();
  await consumer.catch((e) => (failure ??= e));
  await vm.shutdown();
}

const seconds = (performance.now() - t0) / 1000;
if (failure) {
  console.error("soak failed:", failure);
  Deno.exit(1);
}
// Flatness: compare the last sample with the first one after warm-up (the first 100k ops).
const base = samples.find((s) => s.ops >= Math.min(EVERY, COUNT)) ?? samples[0];
const last = samples.at(-1)!;
const rssGrowth = last.rss - base.rss;
const fdGrowth = last.fds - base.fds;
console.log(
  `\ndone: ${ops} ops (${events} events, ${ops - events} commands) in ${seconds.toFixed(1)} s ` +
    `= ${Math.round(ops / seconds)} ops/s; ${reconnects} reconnects\n` +
    `RSS ${(base.rss / MiB).toFixed(1)} → ${(last.rss / MiB).toFixed(1)} MiB ` +
    `(${rssGrowth >= 0 ? "+" : ""}${(rssGrowth / MiB).toFixed(1)}; ` +
    `min ${(Math.min(...samples.map((s) => s.rss)) / MiB).toFixed(1)}, ` +
    `max ${(Math.max(...samples.map((s) => s.rss)) / MiB).toFixed(1)}), ` +
    `fds ${base.fds} → ${last.fds}; QEMU fds ${base.qemuFds} → ${last.qemuFds}; ` +
    `QEMU exit: ${vm.describeExit()?.replace(/\s*\n\s*/g, " ⏎ ")}`,
);
const flat = fdGrowth <= 0 && rssGrowth <= MAX_RSS_GROWTH;
console.log(flat ? "flat: yes" : "flat: NO (fds or RSS grew)");
Deno.exit(flat ? 0 : 1);
