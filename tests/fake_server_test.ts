/**
 * Faults real QEMU does not produce, played by an in-process fake QMP server
 * on a unix socket (tests/helpers/fake_server.ts).
 */
import assert from "node:assert/strict";
import { connect, type ConnectOptions, type QmpClient } from "../lib/client.ts";
import {
  AbortError,
  ConnectionClosedError,
  EventOverflowError,
  NegotiationError,
  ProtocolError,
  type QmpError,
  ServerParseError,
  TimeoutError,
} from "../lib/errors.ts";
import type { OverflowPolicy } from "../lib/events.ts";
import { type FakeConn, qemuGreeting, startFakeServer } from "./helpers/fake_server.ts";
import { delay, within } from "./helpers/qemu.ts";

function open(address: string, options: ConnectOptions = {}): Promise<QmpClient> {
  return connect(address, { timeout: "5s", commandTimeout: "5s", ...options });
}

const RUNNING = { status: "running", singlestep: false, running: true };

/** Expects `p` to reject with a ConnectionClosedError of `reason`; returns it. */
async function closedWith(
  p: Promise<unknown>,
  reason: ConnectionClosedError["reason"],
): Promise<ConnectionClosedError> {
  const err = await within(p, 5000, "rejection").then(
    (v) => assert.fail(`expected a rejection, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConnectionClosedError, String(err));
  assert.equal(err.reason, reason);
  return err;
}

/** Handshake, then answer `query-status` requests with `respond` until EOF. */
function afterFirstCommand(respond: (c: FakeConn, req: Record<string, unknown>) => Promise<void>) {
  return async (c: FakeConn) => {
    await c.handshake();
    const req = await c.recv();
    assert.equal(req.execute, "query-status");
    await respond(c, req);
    await c.eof;
  };
}

Deno.test("garbage after the greeting closes with reason error; pending command rejects", async () => {
  await using server = await startFakeServer(afterFirstCommand(async (c) => {
    await c.write("garbage!!\r\n");
  }));
  await using client = await open(server.address);
  const err = await closedWith(client.execute("query-status"), "error");
  assert.ok(err.cause instanceof ProtocolError, String(err.cause));
  assert.equal(err.cause.received, "garbage!!\r\n");
  assert.match(err.cause.message, /bytes that are not JSON: "garbage!!\\r\\n"/);
  await within(client.closed, 2000, "closed");
  assert.equal(client.closeError?.reason, "error");
  assert.equal(client.closeError?.cause, err.cause);
  await closedWith(client.execute("query-status"), "error"); // and stays closed
});

Deno.test("garbage instead of a greeting: connect rejects with ProtocolError naming it", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.write("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    await c.eof;
  });
  const err = await open(server.address).then(
    () => assert.fail("connect should fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ProtocolError, String(err));
  assert.ok(err.received?.startsWith("SSH-2.0-OpenSSH_9.2p1"), err.received);
  assert.match(err.message, /SSH-2\.0-OpenSSH_9\.2p1/);
  assert.match(err.message, /really a QMP monitor/);
});

Deno.test("a JSON object that is not a greeting: connect rejects with ProtocolError", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.send({ return: {}, id: 1 });
    await c.eof;
  });
  await assert.rejects(open(server.address), (e: unknown) => {
    assert.ok(e instanceof ProtocolError, String(e));
    assert.match(e.message, /Expected a QMP greeting/);
    assert.match(e.message, /\{"return":\{\},"id":1\}/);
    return true;
  });
});

Deno.test("truncated JSON then close: pending command rejects, cause names the truncation", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    await c.recv();
    await c.write('{"return": {"status": "runn');
    c.close();
  });
  await using client = await open(server.address);
  const err = await closedWith(client.execute("query-status"), "error");
  assert.ok(err.cause instanceof ProtocolError);
  assert.match(err.cause.message, /ended in the middle of a message \(27 bytes received/);
  assert.equal(err.cause.received, '{"return": {"status": "runn');
});

Deno.test("a non-object message ([1,2]) is a protocol error", async () => {
  await using server = await startFakeServer(afterFirstCommand(async (c) => {
    await c.write("[1,2]\r\n");
  }));
  await using client = await open(server.address);
  const err = await closedWith(client.execute("query-status"), "error");
  assert.ok(err.cause instanceof ProtocolError);
  assert.match(err.cause.message, /a JSON value that is not an object: "\[1,2\]\\r\\n"/);
});

Deno.test("an object that is neither reply nor event is a protocol error", async () => {
  await using server = await startFakeServer(afterFirstCommand(async (c) => {
    await c.send({ hello: "world" });
  }));
  await using client = await open(server.address);
  const err = await closedWith(client.execute("query-status"), "error");
  assert.ok(err.cause instanceof ProtocolError);
  assert.match(err.cause.message, /neither a reply nor an event: \{"hello":"world"\}/);
});

Deno.test("a reply with an unknown id warns and the connection stays usable", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const req = await c.recv();
    await c.send({ return: { bogus: true }, id: 999 });
    await c.send({ return: {}, id: "abc" });
    await c.reply(req, RUNNING);
    await c.reply(await c.recv(), RUNNING);
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await open(server.address, { onWarning: (w) => warnings.push(w) });
  assert.deepEqual(await client.execute("query-status"), RUNNING);
  assert.equal(warnings.length, 2);
  assert.ok(warnings.every((w) => w instanceof ProtocolError));
  assert.match(warnings[0].message, /unknown id 999/);
  assert.match(warnings[1].message, /unknown id "abc"/);
  assert.deepEqual(await client.execute("query-status"), RUNNING);
  assert.equal(client.state, "open");
});

Deno.test("an id-less error with one command pending rejects it with ServerParseError", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    await c.recv();
    await c.send({ error: { class: "GenericError", desc: "JSON parse error, expecting value" } });
    await c.reply(await c.recv(), RUNNING);
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await open(server.address, { onWarning: (w) => warnings.push(w) });
  await assert.rejects(client.execute("query-status"), (e: unknown) => {
    assert.ok(e instanceof ServerParseError, String(e));
    assert.ok(e instanceof ProtocolError);
    assert.equal(e.class, "GenericError");
    assert.equal(e.desc, "JSON parse error, expecting value");
    return true;
  });
  assert.deepEqual(warnings, []);
  assert.equal(client.pendingCommands, 0);
  assert.deepEqual(await client.execute("query-status"), RUNNING); // still usable
});

Deno.test("an id-less error with two commands pending cannot be attributed: warning only", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const a = await c.recv();
    const b = await c.recv();
    await c.send({ error: { class: "GenericError", desc: "JSON parse error, expecting value" } });
    await c.reply(a, RUNNING);
    await c.reply(b, { other: 1 });
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await open(server.address, { onWarning: (w) => warnings.push(w) });
  const [a, b] = await Promise.all([
    client.execute("query-status"),
    client.executeRaw("query-other"),
  ]);
  assert.deepEqual(a, RUNNING);
  assert.deepEqual(b, { other: 1 });
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0] instanceof ServerParseError);
});

Deno.test("disconnect with 10 commands pending: each rejects once with reason peer", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    for (let i = 0; i < 10; i++) await c.recv();
    c.close();
  });
  await using client = await open(server.address);
  let resolved = 0;
  const rejections: unknown[] = [];
  const all = Array.from({ length: 10 }, (_, i) =>
    client.executeRaw("query-status", { i }).then(
      () => void resolved++,
      (e) => void rejections.push(e),
    ));
  await within(Promise.all(all), 5000, "10 pending commands");
  await delay(20); // any second settlement would be a bug (promises settle once anyway)
  assert.equal(resolved, 0);
  assert.equal(rejections.length, 10);
  for (const e of rejections) {
    assert.ok(e instanceof ConnectionClosedError);
    assert.equal(e.reason, "peer");
    assert.match(e.message, /query-status did not complete: QEMU closed the connection/);
  }
  assert.equal(client.closeError?.reason, "peer");
  assert.equal(client.pendingCommands, 0);
});

Deno.test("a greeting and a reply dripped one byte at a time work", async () => {
  const drip = async (c: FakeConn, msg: unknown) => {
    // CRLF first: once the closing brace is out, the client may hang up at once.
    for (const byte of new TextEncoder().encode("\r\n" + JSON.stringify(msg))) {
      await c.write(new Uint8Array([byte]));
      await delay(1);
    }
  };
  await using server = await startFakeServer(async (c) => {
    await drip(c, qemuGreeting());
    const neg = await c.recv();
    await drip(c, { return: {}, id: neg.id });
    const req = await c.recv();
    await drip(c, { event: "STOP", timestamp: { seconds: 1, microseconds: 500000 } });
    await drip(c, { return: { ...RUNNING, note: 'a "quoted" } brace' }, id: req.id });
    await c.eof;
  });
  await using client = await open(server.address);
  assert.equal(client.greeting.version.qemu.micro, 22);
  const stop = client.waitEvent("STOP", { timeout: "5s" });
  assert.deepEqual(await client.executeRaw("query-status"), {
    ...RUNNING,
    note: 'a "quoted" } brace',
  });
  const ev = await stop;
  assert.deepEqual(ev.timestamp, { seconds: 1, microseconds: 500000 });
  assert.equal(ev.time?.getTime(), 1500);
});

Deno.test("a message larger than maxMessageSize is a ProtocolError and closes", async () => {
  await using server = await startFakeServer(afterFirstCommand(async (c, req) => {
    await c.reply(req, { blob: "x".repeat(2000) });
  }));
  await using client = await open(server.address, { maxMessageSize: 1024 });
  const err = await closedWith(client.execute("query-status"), "error");
  assert.ok(err.cause instanceof ProtocolError);
  assert.match(err.cause.message, /larger than the 1024-byte limit/);
  assert.match(err.cause.message, /maxMessageSize/);
  assert.equal(client.state, "closed");
});

Deno.test("connect(): an option the client refuses rejects at once and closes the connection", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake().catch(() => {});
  });
  // The framer refuses a non-positive maxMessageSize once the socket is open: the connection
  // must not be left open (the resource sanitizer checks), nor connect() left pending.
  await assert.rejects(
    within(open(server.address, { maxMessageSize: 0 }), 5000, "connect"),
    (e: unknown) => e instanceof RangeError && /maxMessageSize/.test(e.message),
  );
});

Deno.test("pretty-printed multi-line greeting, replies and events work", async () => {
  const pretty = (c: FakeConn, msg: unknown) => c.write(JSON.stringify(msg, null, 2) + "\n");
  await using server = await startFakeServer(async (c) => {
    await pretty(c, qemuGreeting());
    const neg = await c.recv();
    await pretty(c, { return: {}, id: neg.id });
    const req = await c.recv();
    await pretty(c, {
      timestamp: { seconds: 1700000000, microseconds: 1 },
      event: "DEVICE_DELETED",
      data: { device: "tab{0}", path: "/machine/peripheral/tab0" },
    });
    await pretty(c, { return: [{ name: "a" }, { name: "b\n}" }], id: req.id });
    await c.eof;
  });
  await using client = await open(server.address);
  const deleted = client.waitEvent("DEVICE_DELETED", { timeout: "5s" });
  assert.deepEqual(await client.executeRaw("query-commands"), [{ name: "a" }, { name: "b\n}" }]);
  assert.deepEqual((await deleted).data, {
    device: "tab{0}",
    path: "/machine/peripheral/tab0",
  });
});

const jobNumber = (id: string) => Number(id.slice(3));

/** A server that floods `count` numbered events before answering the first command. */
function flood(count: number) {
  return afterFirstCommand(async (c, req) => {
    for (let n = 0; n < count; n++) {
      await c.event("JOB_STATUS_CHANGE", { id: `job${n}`, status: "running" });
    }
    await c.reply(req, RUNNING);
  });
}

Deno.test("events flood with bufferSize 10 and the default policy: overflow error", async () => {
  await using server = await startFakeServer(flood(15));
  await using client = await open(server.address);
  const events = client.events({ names: ["JOB_STATUS_CHANGE"], bufferSize: 10 });
  await client.execute("query-status"); // its reply comes after the 15 events
  assert.equal(events.size, 10);
  const got: number[] = [];
  await assert.rejects(
    within(
      (async () => {
        for await (const ev of events) got.push(jobNumber(ev.data.id));
      })(),
      2000,
      "iteration",
    ),
    (e: unknown) => {
      assert.ok(e instanceof EventOverflowError, String(e));
      assert.equal(e.bufferSize, 10);
      return true;
    },
  );
  assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(events.dropped >= 1);
});

for (
  const [policy, expected] of [
    ["drop-oldest", [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]],
    ["drop-newest", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]],
  ] as [OverflowPolicy, number[]][]
) {
  Deno.test(`events flood with bufferSize 10 and overflow ${policy}`, async () => {
    await using server = await startFakeServer(flood(15));
    await using client = await open(server.address);
    using events = client.events({
      names: ["JOB_STATUS_CHANGE"],
      bufferSize: 10,
      overflow: policy,
    });
    await client.execute("query-status");
    const got: number[] = [];
    for (let i = 0; i < 10; i++) {
      got.push(jobNumber((await events.get({ timeout: 1000 })).data.id));
    }
    assert.deepEqual(got, expected);
    assert.equal(events.dropped, 5);
    assert.equal(events.size, 0);
    assert.equal(events.ended, false);
  });
}

Deno.test("the server closing mid-waitEvent rejects it with ConnectionClosedError", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    await c.recv(); // the trigger: close instead of replying
    c.close();
  });
  await using client = await open(server.address);
  const stopped = client.waitEvent("STOP", { timeout: "10s" });
  const reply = client.execute("query-status");
  await closedWith(stopped, "peer");
  await closedWith(reply, "peer");
});

Deno.test("no greeting at all: connect rejects with TimeoutError within its timeout", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.eof; // say nothing until the client gives up
  });
  const t0 = Date.now();
  const err = await connect(server.address, { timeout: 300 }).then(
    () => assert.fail("connect should time out"),
    (e: unknown) => e,
  );
  const took = Date.now() - t0;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.timeoutMs, 300);
  assert.match(err.message, /Connecting to unix:.* did not complete within 300ms/);
  assert.match(err.message, /greeting/);
  assert.ok(took >= 280 && took < 1500, `took ${took} ms`);
  await within(server.firstScriptDone, 2000, "server saw the client leave");
});

Deno.test("connect's timeout bounds greeting and negotiation together", async () => {
  // Greeting after 250 ms, then qmp_capabilities is never answered: the whole
  // connect must still give up at its 400 ms deadline.
  await using server = await startFakeServer(async (c) => {
    await delay(250);
    await c.greet();
    await c.recv();
    await c.eof;
  });
  const t0 = Date.now();
  const err = await connect(server.address, { timeout: 400 }).then(
    () => assert.fail("connect should time out"),
    (e: unknown) => e,
  );
  const took = Date.now() - t0;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.timeoutMs, 400);
  assert.ok(took >= 380 && took < 550, `connect with timeout 400 ms took ${took} ms`);
});

Deno.test("qmp_capabilities refused: connect rejects with NegotiationError", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.greet();
    const req = await c.recv();
    await c.send({
      id: req.id,
      error: { class: "GenericError", desc: "Parameter 'null' does not accept value 'bogus'" },
    });
    await c.eof;
  });
  await assert.rejects(open(server.address), (e: unknown) => {
    assert.ok(e instanceof NegotiationError, String(e));
    assert.match(e.message, /Capability negotiation failed: Parameter 'null'/);
    return true;
  });
  await within(server.firstScriptDone, 2000, "client closed after failed negotiation");
});

Deno.test("oob requested but not offered: NegotiationError, nothing sent", async () => {
  let received: Record<string, unknown> | undefined;
  await using server = await startFakeServer(async (c) => {
    await c.greet([]);
    received = await c.recv().catch(() => undefined);
  });
  await assert.rejects(open(server.address, { oob: true }), (e: unknown) => {
    assert.ok(e instanceof NegotiationError, String(e));
    assert.match(e.message, /oob capability was requested but .* offers only \[\]/);
    return true;
  });
  await within(server.firstScriptDone, 2000, "client closed");
  assert.equal(received, undefined);
});

Deno.test("connect with an already-aborted signal rejects with AbortError", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.eof;
  });
  const ac = new AbortController();
  ac.abort(new Error("stop"));
  await assert.rejects(open(server.address, { signal: ac.signal }), AbortError);
});
