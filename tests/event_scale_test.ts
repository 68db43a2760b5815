/**
 * Many concurrent event waits on one connection (in memory, no sockets):
 * registering and removing a `waitEvent` / `listen()` is O(1), so 30,000 of
 * them arm, settle and go away in well under a second; and the name index
 * behind it delivers exactly what each listener asked for. Also: a wait that
 * times out names the event and the filter it waited for.
 */
import assert from "node:assert/strict";
import { TimeoutError } from "../lib/errors.ts";
import { openMemoryClient } from "./helpers/memory_transport.ts";
import { within } from "./helpers/qemu.ts";

const N = 30_000;
/** Generous: O(1) registration takes ~20-100 ms for 30,000 here; quadratic took 7-8 s. */
const BOUND_MS = 1000;

/** Runs `step(i)` for i in [0, n), failing as soon as the whole takes longer than `ms`. */
function timedLoop(what: string, n: number, ms: number, step: (i: number) => void): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    step(i);
    if ((i & 1023) === 0 && performance.now() - t0 > ms) {
      assert.fail(`${what}: only ${i} of ${n} done after ${ms} ms (quadratic?)`);
    }
  }
  return performance.now() - t0;
}

Deno.test("scale: 30,000 waitEvent()s arm in < 1 s and one event settles them all", async () => {
  const { client, peer } = await openMemoryClient();
  try {
    const waits: Promise<unknown>[] = new Array(N);
    const armMs = timedLoop("arming waitEvent", N, BOUND_MS, (i) => {
      waits[i] = client.waitEvent("STOP", { timeout: "30s" });
    });
    const t0 = performance.now();
    peer.event("RESUME"); // not for them
    peer.event("STOP");
    const events = await within(Promise.all(waits), BOUND_MS, "settling on STOP");
    const settleMs = performance.now() - t0;
    assert.equal(events.length, N);
    assert.ok(events.every((e) => (e as { event: string }).event === "STOP"));
    console.log(
      `  ${N} waits: armed in ${armMs.toFixed(0)} ms, settled in ${settleMs.toFixed(0)} ms`,
    );
  } finally {
    await client.close();
  }
});

Deno.test("scale: 30,000 waitEvent()s with a timeout all reject close to it", async () => {
  const { client } = await openMemoryClient();
  try {
    const timeout = 300;
    const late: number[] = [];
    const waits: Promise<void>[] = new Array(N);
    const armMs = timedLoop("arming waitEvent with timeout", N, BOUND_MS, (i) => {
      const armed = performance.now();
      // Never throws here: a failed test closes the client and rejects the rest.
      waits[i] = client.waitEvent("STOP", { timeout }).then(
        () => void late.push(NaN),
        (e) =>
          void late.push(e instanceof TimeoutError ? performance.now() - armed - timeout : NaN),
      );
    });
    await within(Promise.all(waits), timeout + BOUND_MS, "30,000 timeouts");
    assert.ok(!late.some(Number.isNaN), "every wait ends with a TimeoutError");
    const worst = Math.max(...late);
    assert.ok(Math.min(...late) >= -1, "a timeout fired early");
    assert.ok(worst < BOUND_MS, `the last wait settled ${worst.toFixed(0)} ms after its timeout`);
    console.log(`  armed in ${armMs.toFixed(0)} ms; worst lateness ${worst.toFixed(0)} ms`);
  } finally {
    await client.close();
  }
});

Deno.test("scale: 30,000 aborted waits and closed listeners leave in O(1) each", async () => {
  const { client, peer } = await openMemoryClient();
  try {
    const abort = new AbortController();
    const waits: Promise<unknown>[] = new Array(N);
    timedLoop("arming abortable waits", N, BOUND_MS, (i) => {
      waits[i] = client.waitEvent("STOP", { signal: abort.signal }).catch((e) => e);
    });
    abort.abort();
    const errors = await within(Promise.all(waits), BOUND_MS, "30,000 aborts");
    assert.ok(errors.every((e) => (e as Error).name === "AbortError"));

    const listeners = new Array(N);
    timedLoop("listen()", N, BOUND_MS, (i) => {
      listeners[i] = client.listen({ names: ["STOP"], bufferSize: 1, overflow: "drop-newest" });
    });
    timedLoop("close()", N, BOUND_MS, (i) => listeners[i].close());

    // Nothing is left registered: a STOP reaches only a listener made afterwards.
    const after = client.listen({ names: ["STOP"] });
    peer.event("STOP");
    assert.equal((await after.get({ timeout: "2s" })).event, "STOP");
    assert.ok(listeners.every((l) => l.size === 0), "a closed listener received an event");
    after.close();
  } finally {
    await client.close();
  }
});

Deno.test("events: each listener gets exactly the names it asked for", async () => {
  const { client, peer } = await openMemoryClient();
  try {
    const all = client.listen();
    const stops = client.listen({ names: ["STOP"] });
    const either = client.listen({ names: ["STOP", "RESUME", "STOP"] }); // duplicate name: once
    const resets = client.listen({ names: ["RESET"] });
    const stopWait = client.waitEvent("STOP");
    peer.event("STOP");
    peer.event("RESUME");
    peer.event("SHUTDOWN");
    await stopWait;
    const sync = client.waitEvent("POWERDOWN");
    peer.event("POWERDOWN");
    await sync;
    const names = (l: { drain(): { event: string }[] }) => l.drain().map((e) => e.event);
    assert.deepEqual(names(all), ["STOP", "RESUME", "SHUTDOWN", "POWERDOWN"]);
    assert.deepEqual(names(stops), ["STOP"]);
    assert.deepEqual(names(either), ["STOP", "RESUME"]);
    assert.deepEqual(names(resets), []);
    for (const l of [all, stops, either, resets]) l.close();
  } finally {
    await client.close();
  }
});

Deno.test("events: a listener registered while an event is delivered does not get that event", async () => {
  const { client, peer } = await openMemoryClient();
  try {
    let late: ReturnType<typeof client.listen> | undefined;
    const first = client.waitEvent("STOP", {
      where: () => {
        late ??= client.listen({ names: ["STOP"] }); // registered mid-delivery
        return true;
      },
    });
    peer.event("STOP", { n: 1 });
    await first;
    peer.event("STOP", { n: 2 });
    const got = await late!.get({ timeout: "2s" });
    assert.deepEqual(got.data, { n: 2 });
    assert.equal(late!.size, 0);
    late!.close();
  } finally {
    await client.close();
  }
});

Deno.test("waitEvent: a timeout names the event and the filter", async () => {
  const { client } = await openMemoryClient();
  try {
    await assert.rejects(client.waitEvent("STOP", { timeout: "50ms" }), (e: unknown) => {
      assert.ok(e instanceof TimeoutError);
      assert.match(e.message, /^Waiting for STOP did not complete within 50ms/);
      return true;
    });
    await assert.rejects(
      client.waitEvent("DEVICE_DELETED", { where: { device: "tab0" }, timeout: 50 }),
      /^TimeoutError: Waiting for DEVICE_DELETED with data matching \{"device":"tab0"\} did not/,
    );
    await assert.rejects(
      client.waitEvent("BLOCK_JOB_COMPLETED", {
        where: (e) => e.data.device === "j1",
        timeout: 50,
      }),
      /Waiting for BLOCK_JOB_COMPLETED accepted by the where predicate \(e\) ?=> ?e\.data\.device === "j1"/,
    );
    using listener = client.listen({ names: ["RESET", "SHUTDOWN"] });
    await assert.rejects(
      listener.get({ timeout: 50 }),
      /^TimeoutError: Waiting for RESET or SHUTDOWN/,
    );
    const abort = new AbortController();
    const aborted = client.waitEvent("SUSPEND", { signal: abort.signal });
    abort.abort();
    await assert.rejects(aborted, /Waiting for SUSPEND was aborted/);
  } finally {
    await client.close();
  }
});

Deno.test("scale: 30,000 reads of one listener that give up leave in O(1); the next read still works", async () => {
  const { client, peer } = await openMemoryClient();
  try {
    using listener = client.listen({ names: ["STOP"] });
    const abort = new AbortController();
    const reads: Promise<unknown>[] = new Array(N);
    timedLoop("arming listener.get()", N, BOUND_MS, (i) => {
      reads[i] = listener.get({ signal: abort.signal }).catch((e) => e);
    });
    abort.abort();
    const errors = await within(Promise.all(reads), BOUND_MS, "30,000 aborted reads");
    assert.ok(errors.every((e) => (e as Error).name === "AbortError"));
    // Half of them again, with a timeout, and one that an event satisfies.
    const timedOut = Array.from(
      { length: N / 2 },
      () => listener.get({ timeout: 50 }).catch((e) => e),
    );
    const next = listener.get({ timeout: "5s" });
    await within(Promise.all(timedOut), BOUND_MS + 50, "15,000 timed-out reads");
    peer.event("STOP", { n: 1 });
    assert.deepEqual((await next).data, { n: 1 });
    assert.equal(listener.size, 0);
  } finally {
    await client.close();
  }
});
