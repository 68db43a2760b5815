/**
 * Many concurrent waits: N `qmp.waitEvent("STOP", { timeout })` armed at once
 * on one connection (an in-memory transport: no socket, no QEMU), none of
 * which is ever satisfied.
 *
 * - registration: how long arming the N waits blocks the event loop (one
 *   synchronous loop of `waitEvent` calls);
 * - settle: when the last of them (the last armed) has rejected with its
 *   `TimeoutError`, measured from the moment it was armed, as a multiple of
 *   the timeout (1.00× is the floor: a timer cannot fire early; the rest is
 *   the backlog of rejecting 30,000 promises with 30,000 errors);
 * - dispatch: one event of another name, then one STOP, with the N waits
 *   armed (STOP settles all of them).
 *
 * Baseline: N bare `new Promise((_, reject) => setTimeout(reject, timeout))`,
 * the cost of the timers alone. Each run is a fresh Deno process; ours and the
 * baseline interleaved; medians.
 *
 *   deno run -A bench/waits.ts [--n=30000] [--timeout=1000] [--runs=5] [--quick] [--json]
 *       [--compare=LIBDIR[,LIBDIR...]]   (also run ours with patched copies of lib/)
 *
 * @module
 */
import { DENO_FLAGS, emit, flag, here, loadLib, median, num, type Row } from "./main.ts";

interface Result {
  /** Milliseconds the arming loop took. */
  registerMs: number;
  /** Milliseconds from the last arm to the last rejection. */
  settleMs: number;
  /** Milliseconds to dispatch one unrelated event, then one STOP that settles all N. */
  dispatchMs: number;
}

/** A transport that greets, then reads nothing more until closed. */
function idleTransport() {
  const greeting = new TextEncoder().encode(
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, ' +
      '"capabilities": []}}\r\n',
  );
  const queue: Uint8Array[] = [greeting];
  let wake: (() => void) | undefined;
  let closed = false;
  return {
    push(text: string) {
      queue.push(new TextEncoder().encode(text));
      wake?.();
    },
    transport: {
      async read(p: Uint8Array): Promise<number | null> {
        while (queue.length === 0) {
          if (closed) return null;
          await new Promise<void>((r) => (wake = r));
        }
        const head = queue.shift()!;
        p.set(head.subarray(0, p.length));
        if (head.length > p.length) queue.unshift(head.subarray(p.length));
        return Math.min(head.length, p.length);
      },
      write: (p: Uint8Array) => Promise.resolve(p.length),
      close() {
        closed = true;
        wake?.();
      },
    },
  };
}

async function measureOurs(n: number, timeoutMs: number): Promise<Result> {
  const { client } = await loadLib();
  const io = idleTransport();
  const qmp = new client.QmpClient(io.transport, { negotiate: false });
  await qmp.handshake({ timeout: "5s" });
  const event = (name: string) =>
    `{"event": "${name}", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n`;

  // 1. Arm N waits that time out.
  const t0 = performance.now();
  const waits: Promise<unknown>[] = new Array(n);
  for (let i = 0; i < n; i++) waits[i] = qmp.waitEvent("STOP", { timeout: timeoutMs });
  const t1 = performance.now();
  let last = 0;
  await Promise.all(waits.map((w) => w.then(() => {}, () => (last = performance.now()))));
  // 2. Arm N waits without timeout; an unrelated event, then STOP settles them all.
  const armed: Promise<unknown>[] = new Array(n);
  for (let i = 0; i < n; i++) armed[i] = qmp.waitEvent("STOP");
  const t2 = performance.now();
  io.push(event("RESUME"));
  io.push(event("STOP"));
  await Promise.all(armed);
  const t3 = performance.now();
  await qmp.close();
  return { registerMs: t1 - t0, settleMs: last - t1, dispatchMs: t3 - t2 };
}

async function measureBaseline(n: number, timeoutMs: number): Promise<Result> {
  const t0 = performance.now();
  const waits: Promise<unknown>[] = new Array(n);
  for (let i = 0; i < n; i++) {
    waits[i] = new Promise((_, reject) => setTimeout(() => reject(new Error("t")), timeoutMs));
  }
  const t1 = performance.now();
  let last = 0;
  await Promise.all(waits.map((w) => w.then(() => {}, () => (last = performance.now()))));
  return { registerMs: t1 - t0, settleMs: last - t1, dispatchMs: NaN };
}

async function spawn(kind: string, n: number, timeoutMs: number, lib?: string): Promise<Result> {
  const args = ["run", ...DENO_FLAGS, here("waits.ts"), `--measure=${kind}`, `--n=${n}`];
  args.push(`--timeout=${timeoutMs}`);
  if (lib) args.push(`--lib=${lib}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(120_000),
  }).output();
  if (!out.success) {
    throw new Error(`waits ${kind}: ${new TextDecoder().decode(out.stderr).split("\n")[0]}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim());
}

/** Runs ours (and patched libs) and the baseline interleaved; returns rows. */
export async function bench(options: {
  n: number;
  timeoutMs: number;
  runs: number;
  compare?: string[];
}): Promise<{ rows: Row[]; notes: string[] }> {
  const kinds: { label: string; kind: string; lib?: string }[] = [
    { label: "ours", kind: "ours" },
    { label: "timers", kind: "baseline" },
    ...(options.compare ?? []).map((lib) => ({ label: `lib=${lib}`, kind: "ours", lib })),
  ];
  const res = new Map(kinds.map((k) => [k, [] as Result[]]));
  for (let r = 0; r < options.runs; r++) {
    for (const k of r % 2 === 0 ? kinds : [...kinds].reverse()) {
      res.get(k)!.push(await spawn(k.kind, options.n, options.timeoutMs, k.lib));
    }
  }
  const med = (k: (typeof kinds)[number], f: keyof Result) => median(res.get(k)!.map((x) => x[f]));
  const [ours, base] = kinds;
  const ms = (x: number) => `${num(x, 1)} ms`;
  const n = num(options.n);
  const rows: Row[] = [];
  for (const k of [ours, ...kinds.slice(2)]) {
    const tag = k === ours ? "" : ` (${k.lib})`;
    rows.push(
      {
        figure: `${k === ours ? "" : "  "}${n} waitEvent() armed at once${tag}`,
        ours: ms(med(k, "registerMs")),
        baseline: ms(med(base, "registerMs")),
        ratio: med(k, "registerMs") / med(base, "registerMs"),
        target: "< 100 ms",
        met: med(k, "registerMs") < 100,
      },
      {
        figure: `  last one timed out after (timeout ${num(options.timeoutMs)} ms)${tag}`,
        ours: `${(med(k, "settleMs") / options.timeoutMs).toFixed(2)}×`,
        baseline: `${(med(base, "settleMs") / options.timeoutMs).toFixed(2)}×`,
        ratio: med(k, "settleMs") / med(base, "settleMs"),
        target: "≤ 1.1× timeout",
        met: med(k, "settleMs") <= options.timeoutMs * 1.1,
      },
      {
        figure: `  one event + STOP to ${n} waits${tag}`,
        ours: ms(med(k, "dispatchMs")),
        baseline: "—",
        ratio: NaN,
        target: "report",
        met: undefined,
      },
    );
  }
  const each = (k: (typeof kinds)[number], f: keyof Result) =>
    res.get(k)!.map((x) => num(x[f], 1)).join(" ");
  const notes = [
    `N=${n} waits, timeout ${options.timeoutMs} ms, ${options.runs} runs interleaved, ` +
    `in-memory transport; ` +
    kinds.map((k) =>
      `${k.label}: arm [${each(k, "registerMs")}] settle [${each(k, "settleMs")}]` +
      (k === base ? "" : ` dispatch [${each(k, "dispatchMs")}]`)
    ).join("; "),
  ];
  return { rows, notes };
}

if (import.meta.main) {
  const measure = flag("measure");
  const n = Number(flag("n") ?? 30_000);
  const timeoutMs = Number(flag("timeout") ?? 1000);
  if (measure) {
    const r = measure === "ours"
      ? await measureOurs(n, timeoutMs)
      : await measureBaseline(n, timeoutMs);
    console.log(JSON.stringify(r));
  } else {
    const quick = flag("quick") !== undefined;
    const out = await bench({
      n,
      timeoutMs,
      runs: Number(flag("runs") ?? (quick ? 3 : 5)),
      compare: flag("compare")?.split(",").filter(Boolean),
    });
    emit(out.rows, out.notes);
  }
}
