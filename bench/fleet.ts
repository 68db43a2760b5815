/**
 * Fleet: one process drives many connections at once.
 *
 * - 50 real QEMUs (`-machine none`, `launch()`), concurrently; each: launch
 *   (spawn, connect, negotiate), 100 × `query-status`, 5 events (stop → STOP,
 *   cont → RESUME, twice, then system_reset → RESET; each wait armed before
 *   the command), then `shutdown()` (quit) and exit. Baseline: the same work
 *   from a bare Python asyncio client (`bench/baselines/fleet.py vms`) with the
 *   same QEMU command line.
 * - 1,000 connections to a fake server (`bench/baselines/fake_fleet_server.ts`,
 *   its own process) at once; each: greeting, negotiate, wait until all are
 *   connected (RSS sampled there), N × `query-status`, close. Baseline:
 *   `fleet.py fake`. Floor: the same work from bare `Deno.connect`s in this
 *   runtime (`--worker=bare`: greeting, negotiate, one read pending each into
 *   a buffer the size of the client's idle read buffer, 1 KiB; the commands as
 *   fixed bytes), so "per connection" is compared with what Deno itself costs.
 *   Each side runs twice: in a cold process, and in steady state (`--warm`:
 *   that many connections one after the other first, so code compiled,
 *   runtime modules loaded lazily and heap growth of the first use are paid
 *   before memory is first read).
 *
 * Each side runs in a fresh process (RSS delta = peak RSS during the run minus
 * RSS before it, sampled every 20 ms and at the all-connected point), ours
 * and the baseline alternating; medians of the runs.
 *
 * The VM fleet runs twice as well: cold, and in steady state (`--vm-warm`:
 * that many VMs launched one after the other first, doing the same work), so
 * the one-time cost of a process's first launch (Deno's own code paged in,
 * code compiled, the heap grown: about 7 MiB, measured) is told apart from the
 * cost of each VM. Workers run with `DENO_NO_UPDATE_CHECK=1`: Deno's update
 * check (a DNS lookup and a TLS root store, about 2 MiB) is not the client's.
 *
 *   deno run -A bench/fleet.ts [--vms=50 (0: skip)] [--conns=1000 (0: skip)] [--commands=100]
 *                              [--fake-commands=10] [--warm=300] [--vm-warm=3]
 *                              [--runs=3]
 *                              [--quick] [--json] [--compare=LIBDIR]
 *
 * @module
 */
import {
  bytes,
  DENO_FLAGS,
  emit,
  flag,
  here,
  loadLib,
  median,
  num,
  percentile,
  python,
  ratioRow,
  type Row,
  runJson,
} from "./main.ts";

/** What one worker process reports. */
interface FleetResult {
  seconds: number;
  items: number[];
  /** Peak RSS during the run minus RSS before it. */
  rssDelta: number;
  /** Fake fleet: RSS, V8 heap and external memory at the all-connected point, minus before. */
  connected?: { rss: number; heapUsed: number; external: number };
  /** The same once idle: after a full GC (workers run with --expose-gc) and 100 ms. */
  idle?: { rss: number; heapUsed: number; external: number };
  commandMs?: number[];
}

const EVENTS = [
  ["stop", "STOP"],
  ["cont", "RESUME"],
  ["stop", "STOP"],
  ["cont", "RESUME"],
  ["system_reset", "RESET"],
] as const;

/**
 * Memory of an idle fleet, minus `mem0`: collects the garbage the connects left (twice, as
 * V8 needs for promoted objects), waits 100 ms, and reads the counters.
 */
async function idleMemory(mem0: Deno.MemoryUsage): Promise<NonNullable<FleetResult["idle"]>> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  await new Promise((r) => setTimeout(r, 100));
  return memoryDelta(mem0);
}

/** Memory now, less `mem0` (RSS, V8 heap used, external). */
function memoryDelta(mem0: Deno.MemoryUsage): NonNullable<FleetResult["connected"]> {
  const m = Deno.memoryUsage();
  return {
    rss: m.rss - mem0.rss,
    heapUsed: m.heapUsed - mem0.heapUsed,
    external: m.external - mem0.external,
  };
}

/** Samples RSS every 20 ms until stopped; returns the peak. */
function rssSampler(): { stop(): number; sample(): void } {
  let peak = Deno.memoryUsage().rss;
  const sample = () => (peak = Math.max(peak, Deno.memoryUsage().rss));
  const timer = setInterval(sample, 20);
  return {
    sample,
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

/**
 * Worker: `count` QEMUs at once through launch(); first `warm` of them one
 * after the other (steady state), not measured.
 */
async function workerVms(count: number, commands: number, warm: number): Promise<FleetResult> {
  const { machine } = await loadLib();
  let commandMs: number[] = [];
  const one = async (i: number) => {
    const t0 = performance.now();
    await using vm = await machine.launch({
      name: `bench-fleet-${i}`,
      timeout: "120s",
      qmp: { commandTimeout: "60s" },
    });
    const qmp = vm.qmp;
    for (let k = 0; k < commands; k++) {
      const c0 = performance.now();
      await qmp.execute("query-status");
      commandMs.push(performance.now() - c0);
    }
    for (const [command, event] of EVENTS) {
      const seen = qmp.waitEvent(event, { timeout: "60s" });
      await qmp.execute(command);
      await seen;
    }
    const status = await vm.shutdown({ quitTimeout: "30s" });
    if (status.code !== 0) throw new Error(`VM ${i} exited with ${status.code}`);
    return (performance.now() - t0) / 1000;
  };
  for (let i = 0; i < warm; i++) await one(count + i);
  if (warm) await idleMemory(Deno.memoryUsage()); // the warm-up's garbage is not the fleet's
  commandMs = [];
  const before = Deno.memoryUsage().rss;
  const rss = rssSampler();
  const t0 = performance.now();
  const items = await Promise.all(Array.from({ length: count }, (_, i) => one(i)));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, items, rssDelta: rss.stop() - before, commandMs };
}

/** One side of the fake fleet: how it warms up, connects, and runs its commands. */
interface FleetSide<C> {
  /** One warm-up connection, made and closed (before memory is first read). */
  warmOnce(): Promise<void>;
  /** Connects, greets, negotiates; the connection then idles. */
  open(): Promise<C>;
  /** The commands, then close. */
  work(conn: C): Promise<void>;
}

/**
 * `count` connections of `side` at once, after `warm` warm-up ones: memory at the
 * all-connected point and once idle (after GC), then the commands; total and per-item time.
 */
async function fakeFleet<C>(count: number, warm: number, side: FleetSide<C>) {
  for (let i = 0; i < warm; i++) await side.warmOnce();
  await idleMemory(Deno.memoryUsage()); // the warm-up's garbage is not the fleet's
  const mem0 = Deno.memoryUsage();
  const before = mem0.rss;
  const rss = rssSampler();
  let arrived = 0;
  let allConnected!: () => void;
  const barrier = new Promise<void>((r) => (allConnected = r));
  let connected: FleetResult["connected"];
  let idle: FleetResult["idle"];
  const one = async () => {
    const t0 = performance.now();
    const conn = await side.open();
    if (++arrived === count) {
      rss.sample();
      connected = memoryDelta(mem0);
      idle = await idleMemory(mem0);
      allConnected();
    }
    await barrier;
    await side.work(conn);
    return (performance.now() - t0) / 1000;
  };
  const t0 = performance.now();
  const items = await Promise.all(Array.from({ length: count }, one));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, items, rssDelta: rss.stop() - before, connected, idle };
}

/** Worker: `count` connections at once to the fake server at `address`. */
async function workerFake(address: string, count: number, commands: number, warm: number) {
  const { client } = await loadLib();
  const open = () => client.connect(address, { timeout: "120s", retry: true });
  return await fakeFleet(count, warm, {
    async warmOnce() {
      const qmp = await open();
      await qmp.execute("query-status");
      await qmp.close();
    },
    open,
    async work(qmp) {
      for (let k = 0; k < commands; k++) await qmp.execute("query-status");
      await qmp.close();
    },
  });
}

/** Reads until a whole line (CRLF) has arrived. */
async function line(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  while (true) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("fake server closed the connection");
    if (buf[n - 1] === 0x0a) return;
  }
}

/**
 * Worker: the floor. `count` bare `Deno.connect`s doing the same exchange
 * with fixed bytes; each keeps one read pending while idle, like a client.
 */
async function workerBare(address: string, count: number, commands: number, warm: number) {
  const path = address.slice("unix:".length);
  const enc = new TextEncoder();
  /** Greeting and negotiation on a fresh connection. */
  const handshake = async () => {
    const conn = await Deno.connect({ transport: "unix", path });
    const buf = new Uint8Array(1024);
    await line(conn, buf); // greeting
    await conn.write(enc.encode('{"execute":"qmp_capabilities","id":1}'));
    await line(conn, buf);
    return { conn, buf };
  };
  return await fakeFleet(count, warm, {
    async warmOnce() {
      const { conn, buf } = await handshake();
      await conn.write(enc.encode('{"execute":"query-status","id":2}'));
      await line(conn, buf);
      conn.close();
    },
    async open() {
      const c = await handshake();
      // One read pending while idle, as a client keeps.
      return { ...c, pendingRead: line(c.conn, c.buf) as Promise<void> | undefined };
    },
    async work({ conn, buf, pendingRead }) {
      for (let k = 0; k < commands; k++) {
        await conn.write(enc.encode(`{"execute":"query-status","id":${k + 2}}`));
        await (pendingRead ?? line(conn, buf));
        pendingRead = undefined;
      }
      conn.close();
      await pendingRead?.catch(() => {});
    },
  });
}

async function spawnWorker(args: string[], lib?: string): Promise<FleetResult> {
  Deno.env.set("DENO_NO_UPDATE_CHECK", "1"); // inherited: see the module doc
  return await runJson<FleetResult>(Deno.execPath(), [
    "run",
    ...DENO_FLAGS,
    "--v8-flags=--expose-gc",
    here("fleet.ts"),
    ...args,
    ...(lib ? [`--lib=${lib}`] : []),
  ], 240_000);
}

/** The QEMU command line launch() uses, with the socket path as "@SOCK@". */
async function launchArgv(): Promise<string[]> {
  const { machine } = await loadLib();
  await using vm = await machine.launch({ name: "bench-fleet-probe", timeout: "60s" });
  // Less the accept-mode monitor (QEMU dials launch()'s listener, gone once the probe
  // is): the baseline connects to the server-mode one.
  const argv = vm.commandLine.filter((a, i, all) =>
    !a.endsWith("/qmp-launch.sock") && !all[i + 1]?.endsWith("/qmp-launch.sock")
  );
  return argv.map((a) => a.replace(vm.socketPath, "@SOCK@"));
}

/** Runs both fleets; returns rows. */
export async function bench(
  options: {
    vms: number;
    /** VMs launched one by one before the steady-state VM fleet's memory is first read. */
    vmWarm: number;
    conns: number;
    commands: number;
    fakeCommands: number;
    /** Connections made one by one before the steady-state fleet's memory is first read. */
    warm: number;
    runs: number;
    compare?: string;
  },
) {
  const py = await python();
  const rows: Row[] = [];
  const notes: string[] = [];
  const s = (x: number) => `${num(x, 2)} s`;
  const ms = (x: number) => `${num(x * 1000, 0)} ms`;
  const report = (figure: string, ours: string, base: string, ratio: number): Row => ({
    figure,
    ours,
    baseline: base,
    ratio,
    target: "report",
    met: undefined,
  });
  const summarize = (
    label: string,
    unit: string,
    count: number,
    ours: FleetResult[],
    raw: FleetResult[],
  ) => {
    const tot = (rs: FleetResult[]) => median(rs.map((r) => r.seconds));
    const p = (rs: FleetResult[], q: number) => median(rs.map((r) => percentile(r.items, q)));
    const mem = (rs: FleetResult[]) => median(rs.map((r) => r.rssDelta / count));
    const idle = (rs: FleetResult[]) => median(rs.map((r) => (r.connected?.rss ?? NaN) / count));
    rows.push(
      report(label, s(tot(ours)), s(tot(raw)), tot(ours) / tot(raw)),
      report(
        `  per-${unit} latency p50`,
        ms(p(ours, 50)),
        ms(p(raw, 50)),
        p(ours, 50) / p(raw, 50),
      ),
      report(
        `  per-${unit} latency p99`,
        ms(p(ours, 99)),
        ms(p(raw, 99)),
        p(ours, 99) / p(raw, 99),
      ),
      report(
        `  client RSS per ${unit}, peak delta/N`,
        bytes(mem(ours)),
        bytes(mem(raw)),
        mem(ours) / mem(raw),
      ),
    );
    if (ours.some((r) => r.connected)) {
      rows.push(
        report(
          `  client RSS per ${unit}, all connected`,
          bytes(idle(ours)),
          bytes(idle(raw)),
          idle(ours) / idle(raw),
        ),
      );
    }
  };

  // Real QEMUs.
  if (options.vms > 0) await vmFleet();
  async function vmFleet() {
    const argv = await launchArgv();
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-" });
    try {
      const ours: FleetResult[] = [];
      const patched: FleetResult[] = [];
      const raw: FleetResult[] = [];
      const oursW: FleetResult[] = [];
      const patchedW: FleetResult[] = [];
      const rawW: FleetResult[] = [];
      const workerArgs = [
        `--worker=vms`,
        `--count=${options.vms}`,
        `--commands=${options.commands}`,
      ];
      const warmArgs = [...workerArgs, `--warm=${options.vmWarm}`];
      const rawRun = (warm: number) =>
        runJson<FleetResult>(py, [
          here("baselines/fleet.py"),
          "vms",
          String(options.vms),
          String(options.commands),
          dir,
          JSON.stringify(argv),
          ...(warm ? [String(warm)] : []),
        ], 240_000);
      const steady = options.vmWarm > 0;
      for (let r = 0; r < options.runs; r++) {
        const steps = [
          async () => ours.push(await spawnWorker(workerArgs)),
          async () => raw.push(await rawRun(0)),
          ...(options.compare
            ? [async () => patched.push(await spawnWorker(workerArgs, options.compare))]
            : []),
          ...(steady
            ? [
              async () => oursW.push(await spawnWorker(warmArgs)),
              async () => rawW.push(await rawRun(options.vmWarm)),
              ...(options.compare
                ? [async () => patchedW.push(await spawnWorker(warmArgs, options.compare))]
                : []),
            ]
            : []),
        ];
        for (const step of r % 2 === 0 ? steps : steps.reverse()) await step();
      }
      summarize(`fleet: ${options.vms} QEMUs launch→quit, total`, "VM", options.vms, ours, raw);
      if (options.compare) {
        summarize(`  patched lib: ${options.vms} QEMUs`, "VM", options.vms, patched, ours);
      }
      if (steady) {
        const mem = (rs: FleetResult[]) => median(rs.map((r) => r.rssDelta / options.vms));
        rows.push(
          report(
            `  steady state (after ${options.vmWarm} VMs): client RSS per VM, peak delta/N`,
            bytes(mem(oursW)),
            bytes(mem(rawW)),
            mem(oursW) / mem(rawW),
          ),
        );
        if (options.compare) {
          rows.push(
            report(
              `  patched lib: steady state, client RSS per VM`,
              bytes(mem(patchedW)),
              bytes(mem(oursW)),
              mem(patchedW) / mem(oursW),
            ),
          );
        }
      }
      const perVm = (rs: FleetResult[]) =>
        `[${rs.map((r) => bytes(r.rssDelta / options.vms)).join(" ")}]`;
      notes.push(
        `RSS per VM, each run: cold ours ${perVm(ours)} raw ${perVm(raw)}${
          options.compare ? ` patched ${perVm(patched)}` : ""
        }${
          steady
            ? `; steady ours ${perVm(oursW)} raw ${perVm(rawW)}${
              options.compare ? ` patched ${perVm(patchedW)}` : ""
            }`
            : ""
        }`,
      );
      const cmd = ours.flatMap((r) => r.commandMs ?? []);
      notes.push(
        `${options.vms} QEMUs x (${options.commands} query-status + 5 events + quit), ` +
          `${options.runs} runs; totals ours [${ours.map((r) => s(r.seconds)).join(" ")}] raw [${
            raw.map((r) => s(r.seconds)).join(" ")
          }]; query-status latency under load p50 ${num(percentile(cmd, 50), 2)} ms, ` +
          `p99 ${num(percentile(cmd, 99), 2)} ms; QEMU: ${
            argv.slice(argv.indexOf("-name") + 2).join(" ")
          }`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  // Fake server connections.
  if (options.conns > 0) await fakeFleet();
  return { rows, notes };

  async function fakeFleet() {
    const server = new Deno.Command(Deno.execPath(), {
      args: ["run", ...DENO_FLAGS, here("baselines/fake_fleet_server.ts")],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = server.stdout.getReader();
      const first = await reader.read();
      reader.releaseLock();
      if (first.done) throw new Error("fake_fleet_server.ts exited early");
      const address = new TextDecoder().decode(first.value).trim();
      const path = address.slice("unix:".length);
      const ours: FleetResult[] = [];
      const patched: FleetResult[] = [];
      const raw: FleetResult[] = [];
      const bare: FleetResult[] = [];
      // The same after a warm-up (steady state): one-time costs paid before memory is first read.
      const oursW: FleetResult[] = [];
      const patchedW: FleetResult[] = [];
      const rawW: FleetResult[] = [];
      const bareW: FleetResult[] = [];
      const workerArgs = [
        `--worker=fake`,
        `--address=${address}`,
        `--count=${options.conns}`,
        `--commands=${options.fakeCommands}`,
      ];
      const warmArgs = [...workerArgs, `--warm=${options.warm}`];
      const asBare = (args: string[]) => args.map((a) => a.replace("=fake", "=bare"));
      const python = (warm: number) =>
        runJson<FleetResult>(py, [
          here("baselines/fleet.py"),
          "fake",
          String(options.conns),
          String(options.fakeCommands),
          path,
          ...(warm ? [String(warm)] : []),
        ], 240_000);
      for (let r = 0; r < options.runs; r++) {
        const steps = [
          async () => ours.push(await spawnWorker(workerArgs)),
          async () => raw.push(await python(0)),
          async () => bare.push(await spawnWorker(asBare(workerArgs))),
          async () => oursW.push(await spawnWorker(warmArgs)),
          async () => rawW.push(await python(options.warm)),
          async () => bareW.push(await spawnWorker(asBare(warmArgs))),
          ...(options.compare
            ? [
              async () => patched.push(await spawnWorker(workerArgs, options.compare)),
              async () => patchedW.push(await spawnWorker(warmArgs, options.compare)),
            ]
            : []),
        ];
        for (const step of r % 2 === 0 ? steps : steps.reverse()) await step();
      }
      // Memory per connection against the runtime's own floor (target) and asyncio (comparison).
      // Python frees by reference counting: its "all connected" figure is already idle.
      const idle = (rs: FleetResult[]) =>
        median(rs.map((r) => ((r.idle ?? r.connected)?.rss ?? NaN) / options.conns));
      const instant = (rs: FleetResult[]) =>
        median(rs.map((r) => (r.connected?.rss ?? NaN) / options.conns));
      const peak = (rs: FleetResult[]) => median(rs.map((r) => r.rssDelta / options.conns));
      rows.push(
        ratioRow(
          `memory per idle conn (after GC), steady state, vs bare Deno.connect`,
          idle(oursW),
          idle(bareW),
          bytes,
          { op: "≤", value: 1.3 },
        ),
        ratioRow(`  same, vs Python asyncio`, idle(oursW), idle(rawW), bytes, {
          op: "≤",
          value: 4,
        }),
        ratioRow(
          `  same, cold process (one-time costs included), vs bare`,
          idle(ours),
          idle(bare),
          bytes,
          { op: "≤", value: 1.3 },
        ),
        ratioRow(`  same, vs Python asyncio`, idle(ours), idle(raw), bytes, { op: "≤", value: 4 }),
        ratioRow(
          `  at the all-connected instant (no GC), vs bare`,
          instant(ours),
          instant(bare),
          bytes,
          { op: "≤", value: 1.3 },
        ),
        ratioRow(`  same, vs Python asyncio`, instant(ours), instant(raw), bytes, {
          op: "≤",
          value: 4,
        }),
        ratioRow(
          `  peak RSS per conn (with commands), vs bare`,
          peak(ours),
          peak(bare),
          bytes,
          { op: "≤", value: 1.3 },
        ),
        ratioRow(`  same, vs Python asyncio`, peak(ours), peak(raw), bytes, { op: "≤", value: 4 }),
      );
      if (options.compare) {
        rows.push(
          report(
            `  patched lib: memory per idle conn (after GC), steady state`,
            bytes(idle(patchedW)),
            bytes(idle(oursW)),
            idle(patchedW) / idle(oursW),
          ),
          report(
            `  patched lib: memory per idle conn (after GC), cold`,
            bytes(idle(patched)),
            bytes(idle(ours)),
            idle(patched) / idle(ours),
          ),
          report(
            `  patched lib: peak RSS per conn`,
            bytes(peak(patched)),
            bytes(peak(ours)),
            peak(patched) / peak(ours),
          ),
        );
      }
      summarize(
        `fleet: ${num(options.conns)} fake conns x ${options.fakeCommands} cmds, total`,
        "conn",
        options.conns,
        ours,
        raw,
      );
      if (options.compare) {
        summarize(`  patched lib: ${options.conns} conns`, "conn", options.conns, patched, ours);
      }
      notes.push(
        `${num(options.conns)} fake connections at once, ${options.runs} runs; totals ours [${
          ours.map((r) => s(r.seconds)).join(" ")
        }] raw [${raw.map((r) => s(r.seconds)).join(" ")}]; RSS delta ours [${
          ours.map((r) => bytes(r.rssDelta)).join(" ")
        }] raw [${raw.map((r) => bytes(r.rssDelta)).join(" ")}] bare Deno.connect [${
          bare.map((r) => bytes(r.rssDelta)).join(" ")
        }]; per conn at all-connected: ours [${
          ours.map((r) => bytes((r.connected?.rss ?? NaN) / options.conns)).join(" ")
        }] bare [${
          bare.map((r) => bytes((r.connected?.rss ?? NaN) / options.conns)).join(" ")
        }] raw [${raw.map((r) => bytes((r.connected?.rss ?? NaN) / options.conns)).join(" ")}]${
          options.compare
            ? ` patched [${
              patched.map((r) => bytes((r.connected?.rss ?? NaN) / options.conns)).join(" ")
            }]`
            : ""
        }; idle (after GC): ours [${
          ours.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")
        }] bare [${bare.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")}]${
          options.compare
            ? ` patched [${
              patched.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")
            }]`
            : ""
        }; steady state (after ${options.warm} warm-up connections), idle: ours [${
          oursW.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")
        }] bare [${bareW.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")}] raw [${
          rawW.map((r) => bytes((r.connected?.rss ?? NaN) / options.conns)).join(" ")
        }]${
          options.compare
            ? ` patched [${
              patchedW.map((r) => bytes((r.idle?.rss ?? NaN) / options.conns)).join(" ")
            }]`
            : ""
        }, V8 heap used per conn ours ${
          bytes(median(ours.map((r) => (r.idle?.heapUsed ?? NaN) / options.conns)))
        } bare ${
          bytes(median(bare.map((r) => (r.idle?.heapUsed ?? NaN) / options.conns)))
        }; at all-connected, ours V8 heap ` +
          `+${bytes(median(ours.map((r) => r.connected?.heapUsed ?? NaN)))}, external ` +
          `+${bytes(median(ours.map((r) => r.connected?.external ?? NaN)))}`,
      );
    } finally {
      await server.stdin.close().catch(() => {});
      try {
        server.kill("SIGKILL");
      } catch { /* gone */ }
      await server.status;
      await server.stdout.cancel().catch(() => {});
    }
  }
}

if (import.meta.main) {
  const worker = flag("worker");
  const count = Number(flag("count"));
  const commands = Number(flag("commands"));
  if (worker === "vms") {
    console.log(JSON.stringify(await workerVms(count, commands, Number(flag("warm") ?? 0))));
  } else if (worker === "bare") {
    console.log(
      JSON.stringify(
        await workerBare(flag("address")!, count, commands, Number(flag("warm") ?? 0)),
      ),
    );
  } else if (worker === "fake") {
    console.log(
      JSON.stringify(
        await workerFake(flag("address")!, count, commands, Number(flag("warm") ?? 0)),
      ),
    );
  } else {
    const quick = flag("quick") !== undefined;
    const out = await bench({
      vms: Number(flag("vms") ?? (quick ? 10 : 50)),
      vmWarm: Number(flag("vm-warm") ?? (quick ? 0 : 3)),
      conns: Number(flag("conns") ?? (quick ? 200 : 1000)),
      commands: Number(flag("commands") ?? 100),
      fakeCommands: Number(flag("fake-commands") ?? 10),
      warm: Number(flag("warm") ?? (quick ? 100 : 300)),
      runs: Number(flag("runs") ?? (quick ? 1 : 3)),
      compare: flag("compare"),
    });
    emit(out.rows, out.notes);
  }
}
