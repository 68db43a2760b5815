// Proposed regression tests for patch 1.
import assert from "node:assert/strict";
import { QmpClient } from "../lib/client.ts";
import { memoryPair } from "./helpers/memory_transport.ts";

async function open() {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport);
  const handshake = client.handshake({ timeout: "2s" });
  peer.greet();
  peer.reply(await peer.recv(), {});
  await handshake;
  return { client, peer };
}
const ev = '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n';

Deno.test("burst: 5,000 events in one chunk reach a keeping-up events() consumer", async () => {
  const { client, peer } = await open();
  const events = client.events(); // default: 1000-event buffer, overflow = error
  peer.send(ev.repeat(5000));
  let n = 0;
  const t0 = performance.now();
  for await (const _ of events) if (++n === 5000) break;
  console.log(`  ${Math.round(performance.now() - t0)} ms`);
  await client.close();
});

Deno.test("burst: an unread drop-oldest listener does not slow a command behind 5,000 events", async () => {
  const { client, peer } = await open();
  using _unread = client.listen({ bufferSize: 10, overflow: "drop-oldest" });
  const t0 = performance.now();
  const reply = client.execute("query-status");
  const req = await peer.recv();
  peer.send(ev.repeat(5000));
  peer.reply(req, { status: "running", singlestep: false, running: true });
  await reply;
  const ms = performance.now() - t0;
  console.log(`  ${Math.round(ms)} ms`);
  assert.ok(ms < 5000, `the reply stalled for ${ms} ms behind events nobody reads`);
  await client.close();
});
