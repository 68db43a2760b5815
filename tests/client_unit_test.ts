/** Client routing, events and close semantics against an in-memory peer: no permissions. */
import assert from "node:assert/strict";
import { QmpClient } from "../lib/client.ts";
import {
  AbortError,
  ConnectionClosedError,
  EventOverflowError,
  NegotiationError,
  ProtocolError,
  QmpCommandError,
  type QmpError,
  ServerParseError,
  TimeoutError,
} from "../lib/errors.ts";
import { QmpValidationError } from "../lib/qapi/schema.ts";
import { memoryPair } from "./helpers/memory_transport.ts";

async function open(
  options: ConstructorParameters<typeof QmpClient>[1] = {},
  capabilities?: string[],
) {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport, { address: "mem", ...options });
  peer.greet(capabilities);
  const handshake = client.handshake({ timeout: "2s" });
  if (options.negotiate !== false) await peer.acceptNegotiation();
  await handshake;
  return { client, peer };
}

Deno.test("client: greeting exposed, negotiation enables oob when asked", async () => {
  const { client, peer } = await open({ oob: true });
  assert.deepEqual(client.greeting.version.qemu, { major: 7, minor: 2, micro: 22 });
  assert.equal(client.oob, true);
  assert.equal(client.negotiated, true);
  assert.equal(client.state, "open");
  await client.close();
  await peer.done();
});

Deno.test("client: oob requested but not offered is a NegotiationError", async () => {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport, { oob: true });
  peer.greet([]);
  await assert.rejects(client.handshake({ timeout: "2s" }), (e: unknown) => {
    assert.ok(e instanceof NegotiationError);
    assert.match(e.message, /oob capability was requested/);
    return true;
  });
  assert.equal(peer.unread, 0, "nothing was sent");
  await client.close();
});

Deno.test("client: refused negotiation is a NegotiationError with the QMP error as cause", async () => {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport);
  peer.greet();
  const hs = client.handshake({ timeout: "2s" });
  const cmd = await peer.recv();
  peer.send({ error: { class: "GenericError", desc: "nope" }, id: cmd.id });
  await assert.rejects(hs, (e: unknown) => {
    assert.ok(e instanceof NegotiationError);
    assert.ok(e.cause instanceof QmpCommandError);
    return true;
  });
  await client.close();
});

Deno.test("client: a greeting that is not QMP is a ProtocolError naming it", async () => {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport);
  peer.send({ return: {} }); // e.g. the guest agent
  await assert.rejects(client.handshake({ timeout: "2s" }), (e: unknown) => {
    assert.ok(e instanceof ProtocolError);
    assert.match(e.message, /Expected a QMP greeting.*\{"return":\{\}\}/);
    return true;
  });
  assert.equal(client.state, "closed");
  await client.close();
});

Deno.test("client: no greeting in time is a TimeoutError and the client closes", async () => {
  const { transport } = memoryPair();
  const client = new QmpClient(transport);
  await assert.rejects(client.handshake({ timeout: 50 }), (e: unknown) => {
    assert.ok(e instanceof TimeoutError);
    assert.match(e.message, /greeting.*one client at a time/);
    return true;
  });
  assert.equal(client.state, "closed");
  await client.close();
});

Deno.test("client: concurrent commands, replies out of order, routed by id", async () => {
  const { client, peer } = await open();
  const a = client.executeRaw("cmd-a", { n: 1 });
  const b = client.executeRaw("cmd-b");
  const c = client.executeRaw("cmd-c");
  const ca = await peer.recv(), cb = await peer.recv(), cc = await peer.recv();
  assert.deepEqual(ca, { execute: "cmd-a", arguments: { n: 1 }, id: 2 });
  assert.deepEqual(cb, { execute: "cmd-b", id: 3 });
  peer.reply(cc, "C");
  peer.reply(ca, "A");
  peer.reply(cb, "B");
  assert.deepEqual(await Promise.all([a, b, c]), ["A", "B", "C"]);
  assert.equal(client.pendingCommands, 0);
  await client.close();
});

Deno.test("client: an error reply is a QmpCommandError with class, desc, command, args", async () => {
  const { client, peer } = await open();
  const p = client.executeRaw("device_del", { id: "tab0" });
  const cmd = await peer.recv();
  peer.send({ id: cmd.id, error: { class: "DeviceNotFound", desc: "Device 'tab0' not found" } });
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof QmpCommandError);
    assert.equal(e.name, "QmpCommandError");
    assert.equal(e.class, "DeviceNotFound");
    assert.equal(e.desc, "Device 'tab0' not found");
    assert.equal(e.command, "device_del");
    assert.deepEqual(e.arguments, { id: "tab0" });
    assert.match(e.message, /device_del failed: Device 'tab0' not found \(DeviceNotFound\)/);
    return true;
  });
  await client.close();
});

Deno.test("client: waitEvent armed before the command catches an event sent before the reply", async () => {
  const { client, peer } = await open();
  const stopped = client.waitEvent("STOP", { timeout: "2s" });
  const p = client.executeRaw("stop");
  const cmd = await peer.recv();
  peer.event("STOP");
  peer.reply(cmd);
  await p;
  const ev = await stopped;
  assert.equal(ev.event, "STOP");
  assert.equal(ev.data, undefined);
  assert.ok(ev.time instanceof Date);
  assert.ok(Math.abs(ev.time.getTime() - Date.now()) < 5000);
  await client.close();
});

Deno.test("client: mark() + since catches an event that arrived before the wait", async () => {
  const { client, peer } = await open();
  const mark = client.mark();
  const p = client.executeRaw("system_reset");
  const cmd = await peer.recv();
  peer.event("RESET", { guest: false, reason: "host-qmp-system-reset" });
  peer.reply(cmd);
  await p;
  // Too late without since: the event is gone.
  await assert.rejects(client.waitEvent("RESET", { timeout: 30 }), TimeoutError);
  const ev = await client.waitEvent("RESET", { since: mark, timeout: 30 });
  assert.deepEqual(ev.data, { guest: false, reason: "host-qmp-system-reset" });
  // A mark taken after the event does not see it.
  await assert.rejects(
    client.waitEvent("RESET", { since: client.mark(), timeout: 30 }),
    TimeoutError,
  );
  await client.close();
});

Deno.test("client: waitEvent where: pattern and predicate", async () => {
  const { client, peer } = await open();
  const byPattern = client.waitEvent("DEVICE_DELETED", { where: { device: "b" }, timeout: "2s" });
  const byFn = client.waitEvent("DEVICE_DELETED", {
    where: (e) => (e.data as { path: string }).path.endsWith("/c"),
    timeout: "2s",
  });
  peer.event("DEVICE_DELETED", { device: "a", path: "/machine/peripheral/a" });
  peer.event("DEVICE_DELETED", { device: "b", path: "/machine/peripheral/b" });
  peer.event("DEVICE_DELETED", { device: "c", path: "/machine/peripheral/c" });
  assert.equal(((await byPattern).data as { device: string }).device, "b");
  assert.equal(((await byFn).data as { device: string }).device, "c");
  await client.close();
});

Deno.test("client: every event goes to every listener registered at the time", async () => {
  const { client, peer } = await open();
  const all = client.events();
  const resets = client.events({ names: ["RESET", "SHUTDOWN"] });
  peer.event("STOP");
  peer.event("RESET", { guest: true, reason: "guest-reset" });
  const firstTwo = [(await all.get()).event, (await all.get()).event];
  const late = client.events();
  peer.event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
  const got = [];
  for await (const ev of resets) {
    got.push(ev.event);
    if (got.length === 2) break;
  }
  assert.deepEqual(got, ["RESET", "SHUTDOWN"]);
  assert.deepEqual([...firstTwo, (await all.get()).event], ["STOP", "RESET", "SHUTDOWN"]);
  assert.equal((await late.get()).event, "SHUTDOWN");
  assert.equal(late.size, 0);
  all.close();
  late.close();
  await client.close();
});

Deno.test("client: events() overflow policies", async (t) => {
  await t.step("error (default): buffered events, then EventOverflowError", async () => {
    const { client, peer } = await open();
    const it = client.events({ bufferSize: 3 });
    for (let i = 0; i < 5; i++) peer.event("E", { i });
    const ping = client.executeRaw("ping"); // its reply comes after the events
    peer.reply(await peer.recv());
    await ping;
    const seen: number[] = [];
    await assert.rejects(async () => {
      for await (const ev of it) seen.push((ev.data as unknown as { i: number }).i);
    }, EventOverflowError);
    assert.deepEqual(seen, [0, 1, 2]);
    assert.equal(it.dropped, 1);
    await client.close();
  });
  await t.step("drop-oldest keeps the newest", async () => {
    const { client, peer } = await open();
    const it = client.events({ bufferSize: 3, overflow: "drop-oldest" });
    for (let i = 0; i < 5; i++) peer.event("E", { i });
    peer.event("END");
    const ping = client.executeRaw("ping");
    peer.reply(await peer.recv());
    await ping;
    assert.deepEqual(it.drain().map((e) => (e.data as unknown as { i: number } | undefined)?.i), [
      3,
      4,
      undefined,
    ]);
    assert.equal(it.dropped, 3);
    await client.close();
  });
  await t.step("drop-newest keeps the oldest", async () => {
    const { client, peer } = await open();
    const it = client.events({ bufferSize: 3, overflow: "drop-newest" });
    for (let i = 0; i < 5; i++) peer.event("E", { i });
    const ping = client.executeRaw("ping");
    peer.reply(await peer.recv());
    await ping;
    assert.deepEqual(it.drain().map((e) => (e.data as unknown as { i: number }).i), [0, 1, 2]);
    assert.equal(it.dropped, 2);
    await client.close();
  });
});

Deno.test("client: timeout rejects, and the late reply is dropped without a warning", async () => {
  const warnings: QmpError[] = [];
  const { client, peer } = await open({ onWarning: (w) => warnings.push(w) });
  const p = client.executeRaw("slow", undefined, { timeout: 20 });
  const cmd = await peer.recv();
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TimeoutError);
    assert.match(e.message, /slow did not complete within 20ms/);
    return true;
  });
  peer.reply(cmd, "late");
  const next = client.executeRaw("next");
  peer.reply(await peer.recv(), "ok");
  assert.equal(await next, "ok");
  assert.deepEqual(warnings, []);
  await client.close();
});

Deno.test("client: abort signal, before and during", async () => {
  const { client, peer } = await open();
  await assert.rejects(
    client.executeRaw("x", undefined, { signal: AbortSignal.abort("no") }),
    AbortError,
  );
  assert.equal(peer.unread, 0, "an aborted command is not sent");
  const ac = new AbortController();
  const p = client.executeRaw("y", undefined, { signal: ac.signal });
  await peer.recv();
  ac.abort();
  await assert.rejects(p, AbortError);
  await client.close();
});

Deno.test("client: with oob, at most 8 in-band commands in flight; the rest queue", async () => {
  const { client, peer } = await open({ oob: true });
  const ps = Array.from({ length: 20 }, (_, i) => client.executeRaw("q", { i }));
  const oob = client.executeOob("query-yank");
  const first = [];
  for (let i = 0; i < 9; i++) first.push(await peer.recv()); // 8 in-band + the oob one
  assert.equal(first.filter((m) => m["exec-oob"]).length, 1);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(peer.unread, 0, "the 9th in-band command waits for a reply");
  peer.reply(first.find((m) => m["exec-oob"])!, []);
  await oob;
  const inband = first.filter((m) => m.execute);
  for (const m of inband) peer.reply(m, (m.arguments as { i: number }).i);
  for (let i = 8; i < 20; i++) {
    const m = await peer.recv();
    assert.deepEqual(m.arguments, { i });
    peer.reply(m, i);
  }
  assert.deepEqual(await Promise.all(ps), Array.from({ length: 20 }, (_, i) => i));
  await client.close();
});

Deno.test("client: a queued command that times out is never sent", async () => {
  const { client, peer } = await open({ oob: true });
  const first = Array.from({ length: 8 }, () => client.executeRaw("busy"));
  const queued = client.executeRaw("queued", undefined, { timeout: 10 });
  await assert.rejects(queued, TimeoutError);
  const sent = [];
  for (let i = 0; i < 8; i++) sent.push(await peer.recv());
  for (const m of sent) peer.reply(m);
  await Promise.all(first);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(peer.unread, 0);
  await client.close();
});

Deno.test("client: executeOob without the oob capability fails without sending", async () => {
  const { client, peer } = await open();
  await assert.rejects(client.executeOob("query-yank"), NegotiationError);
  assert.equal(peer.unread, 0);
  await client.close();
});

Deno.test("client: id-less error rejects the single pending command with ServerParseError", async () => {
  const warnings: QmpError[] = [];
  const { client, peer } = await open({ onWarning: (w) => warnings.push(w) });
  const p = client.executeRaw("x");
  await peer.recv();
  peer.send({ error: { class: "GenericError", desc: "JSON parse error, expecting value" } });
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ServerParseError);
    assert.equal(e.class, "GenericError");
    assert.equal(e.desc, "JSON parse error, expecting value");
    return true;
  });
  // With nothing (or several things) pending, it is reported as a warning.
  const sync = client.waitEvent("SYNC" as never, { timeout: "2s" });
  peer.send({ error: { class: "GenericError", desc: "stray" } });
  peer.event("SYNC");
  await sync;
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0] instanceof ServerParseError);
  await client.close();
});

Deno.test("client: a reply with an unknown id is reported and the connection stays usable", async () => {
  const warnings: QmpError[] = [];
  const { client, peer } = await open({ onWarning: (w) => warnings.push(w) });
  peer.send({ return: {}, id: 9999 });
  const q = client.executeRaw("y");
  peer.reply(await peer.recv(), 1);
  assert.equal(await q, 1);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0].message, /unknown id 9999/);
  await client.close();
});

Deno.test("client: close() rejects pending work; later calls reject at once", async () => {
  const { client, peer } = await open();
  const p = client.executeRaw("x");
  const w = client.waitEvent("STOP");
  const it = client.events();
  await peer.recv();
  await client.close();
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.equal(e.reason, "client");
    assert.match(e.message, /x did not complete: the connection to mem was closed by the client/);
    return true;
  });
  await assert.rejects(w, ConnectionClosedError);
  assert.deepEqual(await it.next(), { value: undefined, done: true });
  await assert.rejects(client.executeRaw("later"), (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.match(e.message, /Cannot run later/);
    return true;
  });
  await assert.rejects(client.waitEvent("STOP"), ConnectionClosedError);
  await client.close(); // idempotent
  await peer.done();
});

Deno.test("client: the peer going away rejects pending work with reason peer", async () => {
  const { client, peer } = await open();
  const ps = Array.from({ length: 10 }, () => client.executeRaw("x"));
  const it = client.events();
  for (let i = 0; i < 10; i++) await peer.recv();
  peer.close();
  const results = await Promise.allSettled(ps);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.ok(r.reason instanceof ConnectionClosedError);
    assert.equal(r.reason.reason, "peer");
  }
  await assert.rejects(it.next(), ConnectionClosedError);
  await client.closed;
  assert.equal(client.closeError?.reason, "peer");
  await client.close();
});

Deno.test("client: a reset after quit is a normal close", async () => {
  const { client, peer } = await open();
  const sd = client.waitEvent("SHUTDOWN", { timeout: "2s" });
  const q = client.executeRaw("quit");
  const cmd = await peer.recv();
  peer.event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
  peer.reply(cmd);
  const reset = new Error("Connection reset by peer (os error 104)");
  reset.name = "ConnectionReset";
  peer.close(reset);
  assert.deepEqual(await q, {});
  assert.equal((await sd).event, "SHUTDOWN");
  await client.closed;
  assert.equal(client.closeError?.reason, "quit");
  await client.close();
});

Deno.test("client: EOF before quit's reply still resolves quit", async () => {
  const { client, peer } = await open();
  const q = client.executeRaw("quit");
  await peer.recv();
  peer.close();
  assert.deepEqual(await q, {});
  assert.equal(client.closeError?.reason, "quit");
  await client.close();
});

Deno.test("client: garbage mid-session closes with reason error and a ProtocolError cause", async () => {
  const { client, peer } = await open();
  const p = client.executeRaw("x");
  await peer.recv();
  peer.send("\x00\x01garbage\r\n");
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.equal(e.reason, "error");
    assert.ok(e.cause instanceof ProtocolError);
    assert.match((e.cause as Error).message, /garbage/);
    return true;
  });
  await client.close();
});

Deno.test("client: transcript hook sees every message in both directions", async () => {
  const entries: { direction: string; message: Record<string, unknown> }[] = [];
  const { client, peer } = await open({ transcript: (e) => entries.push(e) });
  const p = client.executeRaw("query-status");
  peer.reply(await peer.recv(), { status: "running" });
  await p;
  assert.deepEqual(entries.map((e) => [e.direction, Object.keys(e.message)[0]]), [
    ["recv", "QMP"],
    ["send", "execute"],
    ["recv", "return"],
    ["send", "execute"],
    ["recv", "return"],
  ]);
  await client.close();
});

Deno.test("client: transcript entries are redacted unless redact: false", async () => {
  for (const redact of [true, false]) {
    const sent: Record<string, unknown>[] = [];
    const { client, peer } = await open({
      redact,
      transcript: (e) => e.direction === "send" && sent.push(e.message),
    });
    const args = { protocol: "vnc", password: "hunter2" };
    const p = client.executeRaw("set_password", args);
    const cmd = await peer.recv();
    assert.deepEqual(cmd.arguments, args, "the real password is sent");
    peer.reply(cmd);
    await p;
    const logged = sent.at(-1)!.arguments as Record<string, unknown>;
    assert.equal(logged.password, redact ? "<redacted>" : "hunter2");
    await client.close();
  }
});

Deno.test("client: bad arguments are rejected before sending", async () => {
  const { client, peer } = await open();
  await assert.rejects(client.executeRaw("x", [] as never), QmpValidationError);
  await assert.rejects(client.executeRaw("x", { n: NaN }), /cannot be encoded as JSON/);
  await assert.rejects(client.executeRaw(""), QmpValidationError);
  assert.equal(peer.unread, 0);
  assert.equal(client.pendingCommands, 0);
  await client.close();
});

Deno.test("client: reconnect fails in-flight commands, never re-sends them, keeps listeners", async () => {
  const first = memoryPair();
  const second = memoryPair();
  let dials = 0;
  const client = new QmpClient(
    first.transport,
    { address: "mem", reconnect: { initialDelay: 1, maxTries: 3 } },
    () => {
      dials++;
      return Promise.resolve(second.transport);
    },
  );
  first.peer.greet();
  const hs = client.handshake({ timeout: "2s" });
  await first.peer.acceptNegotiation();
  await hs;
  const listener = client.events({ names: ["RESET"] });
  const inflight = client.executeRaw("slow");
  await first.peer.recv();
  first.peer.close(); // QEMU went away with "slow" in flight
  await assert.rejects(inflight, (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.equal(e.reason, "peer");
    return true;
  });
  second.peer.greet();
  await second.peer.acceptNegotiation();
  while (client.state !== "open") await new Promise((r) => setTimeout(r, 1));
  assert.equal(dials, 1);
  const p = client.executeRaw("after");
  const cmd = await second.peer.recv();
  assert.equal(cmd.execute, "after", "the in-flight command was not re-sent");
  second.peer.reply(cmd, 1);
  assert.equal(await p, 1);
  second.peer.event("RESET", { guest: true, reason: "guest-reset" });
  assert.equal((await listener.get({ timeout: "2s" })).event, "RESET");
  await client.close();
  assert.equal(client.closeError?.reason, "client");
});

Deno.test("client: a throwing transcript hook is reported and does not leak a pending slot", async () => {
  const warnings: QmpError[] = [];
  const { client, peer } = await open({
    oob: true,
    onWarning: (w) => warnings.push(w),
    transcript: (e) => {
      if (e.direction === "send") throw new Error("hook bug");
    },
  });
  const p = client.executeRaw("x");
  peer.reply(await peer.recv(), 5);
  assert.equal(await p, 5);
  assert.equal(client.pendingCommands, 0);
  assert.ok(warnings.some((w) => /transcript hook threw/.test(w.message)));
  await client.close();
});

Deno.test("client: a repeated greeting (QEMU over TCP after a quick reconnect) is skipped", async () => {
  const { client, peer } = await open();
  peer.greet();
  const p = client.executeRaw("x");
  peer.reply(await peer.recv(), 7);
  assert.equal(await p, 7);
  assert.equal(client.state, "open");
  await client.close();
});
