/**
 * Shared timer lanes (lib/timer_lanes.ts): timeouts never fire early, fire in
 * order within and across durations, and a cancelled or fired timeout leaves
 * no runtime timer behind (pendingLaneTimers() counts them; the op sanitizer
 * would flag a setTimeout).
 */
import assert from "node:assert/strict";
import { pendingLaneTimers, scheduleTimeout } from "../lib/timer_lanes.ts";
import { runDeno } from "./helpers/cli.ts";

const TRAP = new URL("./fixtures/node_timer_trap.ts", import.meta.url).pathname;

Deno.test("timer lanes: never early, each once, cancelled ones never", async () => {
  const fired: { id: string; late: number }[] = [];
  const start = performance.now();
  const plan: [string, number][] = [["a", 30], ["b", 10], ["c", 30], ["d", 20], ["e", 10]];
  const timers = plan.map(([id, ms]) => {
    const armed = performance.now();
    return scheduleTimeout(ms, {
      timedOut: () => fired.push({ id, late: performance.now() - armed - ms }),
    });
  });
  timers[2].cancel(); // c
  timers[2].cancel(); // idempotent
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(fired.map((f) => f.id), ["b", "e", "d", "a"]);
  for (const f of fired) assert.ok(f.late >= -0.5, `${f.id} fired ${-f.late} ms early`);
  timers[0].cancel(); // after it fired: a no-op
  assert.ok(performance.now() - start < 2000);
});

Deno.test("timer lanes: a timeout scheduled from a firing one, and one that throws, do not disturb the rest", async () => {
  const order: string[] = [];
  const errors: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    errors.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    scheduleTimeout(5, {
      timedOut: () => {
        order.push("first");
        scheduleTimeout(5, { timedOut: () => order.push("chained") });
        throw new Error("boom");
      },
    });
    scheduleTimeout(5, { timedOut: () => order.push("second") });
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(order, ["first", "second", "chained"]);
    assert.equal((errors[0] as Error)?.message, "boom");
  } finally {
    globalThis.removeEventListener("error", onError);
  }
});

Deno.test("timer lanes: all cancelled, nothing left running", () => {
  const before = pendingLaneTimers();
  const timers = Array.from(
    { length: 1000 },
    (_, i) => scheduleTimeout(1000 + (i % 3), { timedOut: () => assert.fail("cancelled") }),
  );
  assert.ok(pendingLaneTimers() > before);
  for (const t of timers) t.cancel();
  // No runtime timer is left listening: the lanes' signal timers are not seen by the op
  // sanitizer, so count them.
  assert.equal(pendingLaneTimers(), before);
});

Deno.test("timer lanes: no Node timers; a cancelled timeout lets the process exit, a pending one keeps it", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    const mod = new URL("../lib/timer_lanes.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { scheduleTimeout } from ${JSON.stringify(mod)};
const t0 = performance.now();
scheduleTimeout(60_000, { timedOut: () => console.log("cancelled timeout fired") }).cancel();
scheduleTimeout(300, { timedOut: () => console.log("fired after", Math.round(performance.now() - t0)) });
// A lane that empties keeps its signal for reuse: it must not keep the process alive either.
scheduleTimeout(30_000, { timedOut: () => console.log("cancelled timeout fired") }).cancel();
addEventListener("unload", () => console.log("exit after", Math.round(performance.now() - t0)));
`,
    );
    const t0 = performance.now();
    const r = await runDeno(script, [], {
      flags: ["--quiet", "--allow-read", "--preload", TRAP],
      timeoutMs: 20_000,
    });
    const elapsed = performance.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "the global setTimeout was read");
    const [fired, exit] = r.stdout.trim().split("\n");
    assert.match(fired, /^fired after \d+$/);
    assert.ok(Number(fired.split(" ")[2]) >= 299, r.stdout); // kept alive until it fired
    assert.match(exit, /^exit after \d+$/);
    assert.ok(elapsed < 15_000, `took ${elapsed} ms: a cancelled timeout kept the process alive`);
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("timer lanes: a lane that empties and fills again reuses its runtime timer", async () => {
  let created = 0;
  const original = AbortSignal.timeout;
  AbortSignal.timeout = (ms: number) => {
    created++;
    return original.call(AbortSignal, ms);
  };
  try {
    const fired: number[] = [];
    // 100 sequential waits of one duration, each cancelled before the next starts (like
    // sequential commands with a timeout): one runtime timer, not 100.
    for (let i = 0; i < 100; i++) {
      scheduleTimeout(5_555, { timedOut: () => fired.push(i) }).cancel();
    }
    assert.equal(created, 1);
    // A later one still fires, on time.
    const t0 = performance.now();
    await new Promise<void>((resolve) => scheduleTimeout(50, { timedOut: () => resolve() }));
    assert.ok(performance.now() - t0 >= 49);
    assert.deepEqual(fired, []);
    assert.equal(pendingLaneTimers(), 0);
  } finally {
    AbortSignal.timeout = original;
  }
});

Deno.test("timer lanes: a timeout cancelled by one that expires with it does not fire", async () => {
  const fired: string[] = [];
  let b: ReturnType<typeof scheduleTimeout> | undefined = undefined;
  scheduleTimeout(5, {
    timedOut: () => {
      fired.push("a");
      b!.cancel();
    },
  });
  b = scheduleTimeout(5, { timedOut: () => fired.push("b") });
  scheduleTimeout(5, { timedOut: () => fired.push("c") });
  const until = performance.now() + 15; // all three are due by the time the lane's timer runs
  while (performance.now() < until) { /* busy */ }
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(fired, ["a", "c"]);
  assert.equal(pendingLaneTimers(), 0);
});

Deno.test("timer lanes: targets run on a short stack, not inside the runtime's timer dispatch", async () => {
  // An error built in a target (a TimeoutError) captures the stack; inside the runtime's
  // timer and event-dispatch frames (or a queueMicrotask wrapper) that costs up to ~3× as
  // much (issue 19, bench/waits.ts).
  const stack = await new Promise<string>((resolve) =>
    scheduleTimeout(5, { timedOut: () => resolve(new Error("probe").stack ?? "") })
  );
  assert.doesNotMatch(stack, /dispatchEvent|processTimers|signalAbort|ext:core/, stack);
});
