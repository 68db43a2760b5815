/**
 * Shared timer lanes (lib/timer_lanes.ts): timeouts never fire early, fire in
 * order within and across durations, and a cancelled or fired timeout leaves
 * no runtime timer behind (pendingTimers() counts them; the op sanitizer
 * would flag a setTimeout).
 */
import assert from "node:assert/strict";
import { scheduleTimeout } from "../lib/timer_lanes.ts";
import { pendingTimers } from "../lib/runtime_timer.ts";

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
  const before = pendingTimers();
  const timers = Array.from(
    { length: 1000 },
    (_, i) => scheduleTimeout(1000 + (i % 3), { timedOut: () => assert.fail("cancelled") }),
  );
  assert.ok(pendingTimers() > before);
  for (const t of timers) t.cancel();
  // No runtime timer is left: the signal timers of lib/runtime_timer.ts are not seen
  // by the op sanitizer, so count them; a pending setTimeout would fail the sanitizer.
  assert.equal(pendingTimers(), before);
});
