/** The recent-event ring behind `waitEvent({ since })`, alone and through a client. In memory. */
import assert from "node:assert/strict";
import { TimeoutError } from "../lib/errors.ts";
import { EventHistory } from "../lib/event_history.ts";
import type { QmpEvent } from "../lib/protocol.ts";
import { openMemoryClient } from "./helpers/memory_transport.ts";

function ev(seq: number, event = "X"): QmpEvent {
  return {
    event,
    data: { seq },
    timestamp: { seconds: -1, microseconds: -1 },
    time: undefined,
    seq,
  };
}

/** Every event held, oldest first. */
function held(h: EventHistory): number[] {
  const out: number[] = [];
  h.find((e) => (out.push(e.seq), false));
  return out;
}

Deno.test("event history: keeps the last capacity events, oldest first, across wrap-arounds", () => {
  for (const capacity of [1, 2, 3, 7, 256]) {
    const h = new EventHistory(capacity);
    assert.deepEqual(held(h), []);
    for (let seq = 1; seq <= capacity * 3 + 2; seq++) {
      h.push(ev(seq));
      const first = Math.max(1, seq - capacity + 1);
      assert.deepEqual(held(h), Array.from({ length: seq - first + 1 }, (_, i) => first + i));
      assert.equal(h.size, Math.min(seq, capacity));
    }
  }
});

Deno.test("event history: find returns the oldest match", () => {
  const h = new EventHistory(4);
  for (let seq = 1; seq <= 6; seq++) h.push(ev(seq, seq % 2 ? "ODD" : "EVEN"));
  assert.equal(h.find((e) => e.event === "ODD")?.seq, 3);
  assert.equal(h.find((e) => e.event === "EVEN" && e.seq > 4)?.seq, 6);
  assert.equal(h.find((e) => e.seq > 6), undefined);
});

Deno.test("event history: since finds events within historySize, not older ones", async () => {
  const { client, peer } = await openMemoryClient({ address: "mem", historySize: 3 });
  const mark = client.mark();
  using all = client.events();
  for (let i = 1; i <= 5; i++) peer.event(i === 1 ? "RESET" : "STOP", { i });
  for (let i = 1; i <= 5; i++) await all.get({ timeout: "2s" });
  // RESET (mark + 1) fell out of the 3-event history; the last three STOPs are in it.
  await assert.rejects(client.waitEvent("RESET", { since: mark, timeout: 30 }), TimeoutError);
  const stop = await client.waitEvent("STOP", { since: mark, timeout: 30 });
  assert.equal(stop.seq, mark + 3);
  assert.deepEqual(stop.data, { i: 3 });
  assert.equal((await client.waitEvent("STOP", { since: mark + 4, timeout: 30 })).seq, mark + 5);
  await client.close();
  await peer.done();
});
