/**
 * Runtime timers (lib/runtime_timer.ts): they fire once and never early, a
 * cancelled one never fires, whichever of the two kinds it is; a cancelled
 * one does not keep the process alive, a pending one does; and none of it
 * reads the global `setTimeout` (which loads Deno's Node-compatible timers)
 * while the process has signal timers left.
 */
import assert from "node:assert/strict";
import { pendingTimers, SIGNAL_TIMERS, startTimer } from "../lib/runtime_timer.ts";
import { runDeno } from "./helpers/cli.ts";

const TRAP = new URL("./fixtures/node_timer_trap.ts", import.meta.url).pathname;

Deno.test("runtime timers: each fires once, never early; cancelled ones never; none left pending", async () => {
  // More than SIGNAL_TIMERS: both kinds (signal timers, then setTimeout) are exercised.
  const n = SIGNAL_TIMERS + 8;
  const before = pendingTimers(); // 0 unless another test left one running
  const fired = new Map<number, number>();
  const timers = Array.from({ length: n }, (_, i) => {
    const ms = 5 + (i % 4) * 5;
    const armed = performance.now();
    return startTimer(() => {
      assert.ok(!fired.has(i), `timer ${i} fired twice`);
      fired.set(i, performance.now() - armed - ms);
    }, ms);
  });
  assert.equal(pendingTimers(), before + n);
  const cancelled = new Set([1, 6, SIGNAL_TIMERS - 1, SIGNAL_TIMERS, n - 2]);
  for (const i of cancelled) timers[i].cancel();
  timers[1].cancel(); // idempotent
  assert.equal(pendingTimers(), before + n - cancelled.size);
  const deadline = performance.now() + 5000;
  while (pendingTimers() > before && performance.now() < deadline) {
    await new Promise((r) => startTimer(() => r(undefined), 10));
  }
  assert.equal(pendingTimers(), before);
  for (let i = 0; i < n; i++) {
    if (cancelled.has(i)) assert.ok(!fired.has(i), `cancelled timer ${i} fired`);
    else {
      assert.ok(fired.has(i), `timer ${i} never fired`);
      assert.ok(fired.get(i)! >= -1, `timer ${i} fired ${-fired.get(i)!} ms early`);
    }
  }
  timers[0].cancel(); // after it fired: a no-op
  assert.equal(pendingTimers(), before);
});

Deno.test("runtime timers: no Node timers; a cancelled timer lets the process exit, a pending one keeps it", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    const mod = new URL("../lib/runtime_timer.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { startTimer } from ${JSON.stringify(mod)};
const t0 = performance.now();
startTimer(() => console.log("cancelled timer fired"), 60_000).cancel();
startTimer(() => console.log("fired after", Math.round(performance.now() - t0)), 300);
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
    assert.ok(elapsed < 15_000, `took ${elapsed} ms: the cancelled timer kept the process alive`);
  } finally {
    await Deno.remove(script);
  }
});
