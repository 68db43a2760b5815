/**
 * Event flood: the fake server sends 1,000,000 events as fast as the socket
 * takes them (before answering the command that triggered them); the client
 * consumes them with a `for await` over `events({ bufferSize: 1000 })`, once
 * per overflow policy. RSS (`Deno.memoryUsage().rss`) is sampled during the
 * flood; it must stay within +300 MiB of where it started. The numbers are
 * printed.
 *
 * Set QMPKIT_FLOOD_EVENTS to change the count (default 1,000,000).
 */
import assert from "node:assert/strict";
import { connect } from "../../lib/client.ts";
import { EventOverflowError } from "../../lib/errors.ts";
import type { OverflowPolicy } from "../../lib/events.ts";
import { startFakeServer } from "../helpers/fake_server.ts";
import {
  allSettledOnce,
  assertNoUnhandled,
  guardUnhandled,
  printTable,
  type Row,
  track,
  within,
} from "./harness.ts";

guardUnhandled();

const COUNT = Number(Deno.env.get("QMPKIT_FLOOD_EVENTS") ?? 1_000_000);
const BUFFER = 1000;
const BATCH = 2000; // events per server write (~230 KB)
const RSS_BOUND = 300 * 1024 * 1024;
const MiB = 1024 * 1024;
const enc = new TextEncoder();
const rows: Row[] = [];

/** One pre-encoded batch of numbered JOB_STATUS_CHANGE events, in QEMU's wire format. */
function batch(from: number, to: number): Uint8Array {
  let s = "";
  for (let i = from; i < to; i++) {
    s += `{"timestamp": {"seconds": 1700000000, "microseconds": ${i % 1000000}}, ` +
      `"event": "JOB_STATUS_CHANGE", "data": {"status": "running", "id": "job${i}"}}\r\n`;
  }
  return enc.encode(s);
}

const num = (ev: { data: { id: string } }) => Number(ev.data.id.slice(3));

for (const policy of ["error", "drop-oldest", "drop-newest"] as OverflowPolicy[]) {
  Deno.test(`flood of ${COUNT} events into events({bufferSize: ${BUFFER}, overflow: ${policy}})`, async () => {
    let sentAll = 0;
    await using server = await startFakeServer(async (c) => {
      await c.handshake();
      const trigger = await c.recv();
      for (let b = 0; b < COUNT; b += BATCH) await c.write(batch(b, Math.min(COUNT, b + BATCH)));
      sentAll = performance.now();
      await c.reply(trigger, { flooded: COUNT });
      await c.reply(await c.recv(), { after: true });
      await c.eof;
    });

    const startRss = Deno.memoryUsage().rss;
    let peakRss = startRss;
    const sample = () => (peakRss = Math.max(peakRss, Deno.memoryUsage().rss));
    const sampler = setInterval(sample, 20);
    try {
      await using client = await connect(server.address, { timeout: "5s" });
      const events = client.events({ bufferSize: BUFFER, overflow: policy });
      let received = 0;
      let first = -1;
      let last = -1;
      let inOrder = true;
      const t0 = performance.now();
      const consumer = track(
        "events() iteration",
        (async () => {
          for await (const ev of events) {
            const n = num(ev as { data: { id: string } });
            if (n <= last) inOrder = false;
            if (first < 0) first = n;
            last = n;
            received++;
            if (received % 50_000 === 0) sample();
            if (n === COUNT - 1) break; // the newest event: the flood is over
          }
          return received;
        })(),
      );
      const trigger = track("trigger command", client.executeRaw("query-status"));
      await allSettledOnce([trigger], 120_000);
      // The reply comes after the last event: by now everything was delivered or dropped.
      if (consumer.outcome === "pending") events.close(); // drop-newest may never see the last
      await allSettledOnce([consumer], 5000);
      const seconds = (performance.now() - t0) / 1000;
      clearInterval(sampler);
      sample();

      assert.deepEqual(trigger.value, { flooded: COUNT });
      assert.equal(client.state, "open", "a flood does not close the connection");
      assert.ok(inOrder, "events are delivered in order");
      assert.equal(first, 0, "the first event is always delivered");
      if (policy === "error") {
        // Either the consumer kept up, or it got the buffered events, then the typed error.
        if (consumer.outcome === "rejected") {
          assert.ok(consumer.error instanceof EventOverflowError, String(consumer.error));
          assert.equal(consumer.error.bufferSize, BUFFER);
          assert.equal(last, received - 1, "nothing lost silently before the error");
          assert.ok(received >= BUFFER, `${received} delivered before the overflow`);
        } else {
          assert.equal(received, COUNT);
        }
      } else {
        assert.equal(consumer.outcome, "resolved", String(consumer.error));
        assert.equal(received + events.dropped, COUNT, "every event delivered or counted");
        if (policy === "drop-oldest") assert.equal(last, COUNT - 1, "the newest survives");
      }
      const grew = peakRss - startRss;
      assert.ok(grew < RSS_BOUND, `RSS grew ${(grew / MiB).toFixed(1)} MiB during the flood`);
      // One more command: the connection is still healthy after the flood.
      assert.deepEqual(
        await within(
          client.executeRaw("query-status", undefined, { timeout: "5s" }),
          6000,
          "after",
        ),
        { after: true },
      );
      rows.push({
        policy,
        events: COUNT,
        delivered: received,
        dropped: events.dropped,
        "consumer ended with": consumer.outcome === "rejected"
          ? (consumer.error as Error).name
          : "break at the last event",
        "flood s": seconds.toFixed(2),
        "events/s": Math.round(COUNT / seconds),
        "server done s": ((sentAll - t0) / 1000).toFixed(2),
        "start RSS MiB": (startRss / MiB).toFixed(0),
        "peak RSS MiB": (peakRss / MiB).toFixed(0),
        "peak Δ MiB": (grew / MiB).toFixed(1),
      });
      events.close();
    } finally {
      clearInterval(sampler);
    }
    await assertNoUnhandled();
  });
}

Deno.test("flood table", () => {
  printTable(`Event flood (${COUNT} events, bufferSize ${BUFFER}, RSS bound +300 MiB)`, rows);
  assert.equal(rows.length, 3);
});
