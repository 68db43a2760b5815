/** Reconnect and listener edge cases, in memory (found in review; each failed before its fix). */
import assert from "node:assert/strict";
import { QmpClient } from "../lib/client.ts";
import { ConnectionClosedError } from "../lib/errors.ts";
import type { Transport } from "../lib/transport.ts";
import { memoryPair } from "./helpers/memory_transport.ts";

async function openClient(
  opts: ConstructorParameters<typeof QmpClient>[1] = {},
  dial?: () => Promise<Transport>,
) {
  const { transport, peer } = memoryPair();
  const qmp = new QmpClient(transport, { onWarning: () => {}, ...opts }, dial);
  const hs = qmp.handshake({ timeout: "2s" });
  peer.greet();
  await peer.acceptNegotiation();
  await hs;
  return { qmp, peer };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("listen() with an already-aborted signal ends at once and is never registered", async () => {
  const { qmp } = await openClient();
  using _other = qmp.listen();
  const l = qmp.listen({ signal: AbortSignal.abort() });
  assert.equal(l.ended, true);
  await assert.rejects(l.next());
  await qmp.close();
});

Deno.test("executeOob while reconnecting is a ConnectionClosedError, not a NegotiationError", async () => {
  const second = memoryPair();
  const { qmp, peer } = await openClient(
    { oob: true, reconnect: { initialDelay: 1 } },
    () => Promise.resolve(second.transport),
  );
  peer.close();
  second.peer.greet(); // greets, but negotiation is not answered yet
  await until(() => qmp.state === "reconnecting");
  await assert.rejects(qmp.executeOob("query-yank"), ConnectionClosedError);
  await qmp.close();
});

Deno.test("schema() is fetched again after a reconnect", async () => {
  const second = memoryPair();
  const { qmp, peer } = await openClient(
    { reconnect: { initialDelay: 1 } },
    () => Promise.resolve(second.transport),
  );
  const entry = (name: string) => ({ name, "meta-type": "command", "arg-type": "0" });
  const s1 = qmp.schema();
  peer.reply(await peer.recv(), [entry("old-cmd")]);
  assert.ok((await s1).command("old-cmd"));
  peer.close();
  second.peer.greet();
  await second.peer.acceptNegotiation();
  await until(() => qmp.state === "open");
  const s2 = qmp.schema();
  second.peer.reply(await second.peer.recv(), [entry("new-cmd")]);
  assert.ok((await s2).command("new-cmd"));
  assert.equal((await s2).command("old-cmd"), undefined);
  await qmp.close();
});

Deno.test("events() made after the peer went away throws ConnectionClosedError", async () => {
  const { qmp, peer } = await openClient();
  peer.close();
  await qmp.closed;
  await assert.rejects(async () => {
    for await (const _ of qmp.events()) { /* nothing arrives */ }
  }, ConnectionClosedError);
});

Deno.test("a server that never greets fails one reconnect attempt, not the client", async () => {
  const first = memoryPair();
  const silent = memoryPair(); // accepts, never greets (another client holds the monitor)
  const good = memoryPair();
  const dials: Transport[] = [silent.transport, good.transport];
  const reconnects: number[] = [];
  const qmp = new QmpClient(first.transport, {
    reconnect: {
      initialDelay: 1,
      maxTries: 5,
      handshakeTimeout: 100,
      onReconnect: (i) => reconnects.push(i.attempt),
    },
  }, () => Promise.resolve(dials.shift() ?? good.transport));
  const hs = qmp.handshake({ timeout: "2s" });
  first.peer.greet();
  await first.peer.acceptNegotiation();
  await hs;
  first.peer.close();
  good.peer.greet();
  const negotiated = good.peer.acceptNegotiation();
  await until(() => reconnects.length > 0 || qmp.state === "closed");
  await negotiated;
  assert.equal(qmp.state, "open");
  assert.deepEqual(reconnects, [2]);
  await qmp.close();
});

Deno.test("close() during a reconnect backoff returns at once and leaves no timer", async () => {
  const { qmp, peer } = await openClient(
    { reconnect: { initialDelay: "5s" } },
    () => Promise.reject(new Error("never")),
  );
  peer.close();
  await until(() => qmp.state === "reconnecting");
  const t0 = performance.now();
  await qmp.close();
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(qmp.closeError?.reason, "client");
});

Deno.test("close() from onDisconnect: no reconnect attempt, no back-off timer left behind", async () => {
  let dials = 0;
  const closing: Promise<void>[] = [];
  const { qmp, peer } = await openClient(
    {
      reconnect: {
        initialDelay: "10s",
        onDisconnect: () => closing.push(qmp.close()),
      },
    },
    () => {
      dials++;
      return Promise.resolve(memoryPair().transport);
    },
  );
  peer.close();
  await qmp.closed;
  await Promise.all(closing);
  await new Promise((r) => setTimeout(r, 50)); // the loop would have started by now
  assert.equal(qmp.state, "closed");
  assert.equal(dials, 0);
  // The op sanitizer fails the test if a 10 s back-off timer is still pending here.
});

Deno.test("a transport whose write throws at once: after the reconnect, commands are written again", async () => {
  const second = memoryPair();
  const first = memoryPair();
  let broken = false;
  const transport: Transport = {
    read: (p) => first.transport.read(p),
    write: (p) => {
      if (broken) throw new Error("write failed at once");
      return first.transport.write(p);
    },
    close: () => first.transport.close(),
  };
  const qmp = new QmpClient(
    transport,
    { onWarning: () => {}, reconnect: { initialDelay: 1 } },
    () => Promise.resolve(second.transport),
  );
  const hs = qmp.handshake({ timeout: "2s" });
  first.peer.greet();
  await first.peer.acceptNegotiation();
  await hs;
  broken = true;
  // The write throws synchronously: the connection is lost, the command fails.
  await assert.rejects(qmp.execute("query-status"), ConnectionClosedError);
  second.peer.greet();
  await second.peer.acceptNegotiation();
  await until(() => qmp.state === "open");
  // The next command must reach the new transport (a settled write chain left behind
  // would keep it queued forever).
  const status = qmp.execute("query-status");
  second.peer.reply(await second.peer.recv(), { status: "running" });
  assert.deepEqual(await status, { status: "running" });
  await qmp.close();
});
