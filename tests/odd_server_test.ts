/**
 * Servers and calls QEMU's own Python client (qemu.qmp) copes with: events
 * before the greeting (seen from some QMP servers; ganeti and kata's govmm
 * had to learn to tolerate them), and a command whose arguments are not an
 * object, which must fail with a typed error, not a plain `TypeError`.
 */
import assert from "node:assert/strict";
import { connect, QmpClient } from "../lib/client.ts";
import { QmpError } from "../lib/errors.ts";
import { QmpValidationError } from "../lib/qapi/schema.ts";
import { startFakeServer } from "./helpers/fake_server.ts";
import { memoryPair, openMemoryClient } from "./helpers/memory_transport.ts";

Deno.test("events before the greeting are kept: in the history for since: 0", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.event("RESUME");
    await c.event("DEVICE_DELETED", { device: "tab0", path: "/machine/peripheral/tab0" });
    await c.handshake();
    const req = await c.recv();
    await c.reply(req, { status: "running", running: true, singlestep: false });
    await c.eof;
  });
  await using client = await connect(server.address, { timeout: "5s" });
  assert.equal(client.state, "open");
  assert.equal(client.mark(), 2, "both early events were counted");
  const ev = await client.waitEvent("DEVICE_DELETED", {
    since: 0,
    where: { device: "tab0" },
    timeout: "1s",
  });
  assert.equal(ev.data.path, "/machine/peripheral/tab0");
  assert.equal(ev.seq, 2);
  assert.equal((await client.waitEvent("RESUME", { since: 0, timeout: "1s" })).seq, 1);
  // The connection is fully usable afterwards.
  assert.deepEqual(await client.execute("query-status"), {
    status: "running",
    running: true,
    singlestep: false,
  });
});

Deno.test("events before the greeting reach listeners registered before the handshake", async () => {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport, { address: "mem" });
  const early = client.listen({ names: ["STOP"] });
  const wait = client.waitEvent("STOP", { timeout: "2s" });
  assert.equal(client.state, "connecting");
  peer.event("STOP");
  peer.greet();
  const handshake = client.handshake({ timeout: "2s" });
  await peer.acceptNegotiation();
  await handshake;
  assert.equal((await wait).event, "STOP");
  assert.equal((await early.get({ timeout: "1s" })).seq, 1);
  early.close();
  await client.close();
});

Deno.test("something else before the greeting is still a ProtocolError naming it", async () => {
  await using server = await startFakeServer(async (c) => {
    await c.send({ return: {}, id: 1 });
    await c.eof;
  });
  await assert.rejects(connect(server.address, { timeout: "2s" }), (e: unknown) => {
    assert.ok(e instanceof QmpError);
    assert.equal(e.name, "ProtocolError");
    assert.match(e.message, /Expected a QMP greeting .* received \{"return":\{\},"id":1\}/);
    return true;
  });
});

Deno.test("executeRaw with arguments that are not an object: a QmpError, nothing sent", async () => {
  const { client, peer } = await openMemoryClient({ address: "mem" });
  try {
    for (const args of [[], "x", 5, null, [1n]]) {
      await assert.rejects(client.executeRaw("query-status", args as never), (e: unknown) => {
        assert.ok(e instanceof QmpError, `${e} is a QmpError`);
        assert.ok(e instanceof QmpValidationError);
        assert.equal(e.command, "query-status");
        assert.match(
          e.message,
          /^Invalid arguments for query-status: the arguments must be a JSON object/,
        );
        assert.match(e.message, /nothing was sent/);
        return true;
      });
    }
    await assert.rejects(client.executeRaw(""), (e: unknown) => {
      assert.ok(e instanceof QmpValidationError);
      assert.match(e.message, /^Invalid command: the command name must be a non-empty string/);
      return true;
    });
    assert.equal(peer.unread, 0, "nothing reached the server");
    assert.equal(client.pendingCommands, 0);
  } finally {
    await client.close();
  }
});
