/**
 * Guest agent client against a fake agent (tests/helpers/fake_agent.ts): resynchronisation,
 * silence, restarts, garbage, bounded output, exec timeouts, and the commands that must never
 * run against the host's qemu-ga (fsfreeze, shutdown).
 */
import assert from "node:assert/strict";
import { AgentClient, connectAgent } from "../lib/agent/client.ts";
import {
  AgentCommandError,
  AgentExecTimeoutError,
  AgentPortClosedError,
} from "../lib/agent/errors.ts";
import { encodeBase64 } from "../lib/agent/base64.ts";
import {
  ConnectionClosedError,
  ProtocolError,
  QmpCommandError,
  TimeoutError,
} from "../lib/errors.ts";
import { type AgentRequest, type FakeAnswer, startFakeAgent } from "./helpers/fake_agent.ts";

const ok = (value: unknown = {}): FakeAnswer => ({ return: value });
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("agent: resync skips garbage, stale replies and a stale sync reply; sends 0xFF first", async () => {
  await using agent = await startFakeAgent({
    script: async (conn) => {
      // Leftovers of an earlier client, already in the stream before we say anything.
      await conn.write('{"return": {"stale": 1}}\n}}garbage{"ret');
      const sync = await conn.recv();
      assert.equal(sync.execute, "guest-sync-delimited");
      // A stale sync reply (another id) first, then ours.
      await conn.syncReply({ execute: "guest-sync-delimited", arguments: { id: 1 } });
      await conn.write('{"return": {"stale": 2}}\n');
      await conn.syncReply(sync);
      const ping = await conn.recv();
      assert.equal(ping.execute, "guest-ping");
      await conn.send({ return: { fresh: true } });
      await conn.recv().catch(() => {});
    },
  });
  await using client = await connectAgent(agent.address, { timeout: "2s" });
  assert.deepEqual(await client.executeRaw("guest-ping"), { fresh: true });
  assert.equal(agent.connections[0].delimitersReceived, 1);
  const sync = agent.connections[0].requests[0];
  assert.ok(Number.isSafeInteger(sync.arguments?.id));
});

Deno.test("agent: a silent agent fails connect with a timeout asking whether qemu-ga runs", async () => {
  await using silent = await startFakeAgent({
    script: async (conn) => {
      await conn.recv().catch(() => {});
      await conn.recv(10_000).catch(() => {});
    },
  });
  const t0 = Date.now();
  const err = await connectAgent(silent.address, { timeout: 300 }).catch((e) => e);
  assert.ok(err instanceof TimeoutError, String(err));
  assert.match(err.message, /is qemu-ga started in the guest\?/);
  assert.match(err.message, /socket stays open/);
  assert.ok(Date.now() - t0 < 2000);
});

Deno.test("agent: a reply that arrives after a timeout is discarded by the next resync", async () => {
  let first = true;
  await using agent = await startFakeAgent({
    script: async (conn) => {
      await conn.syncReply(await conn.recv());
      const info = await conn.recv();
      assert.equal(info.execute, "guest-info");
      // qemu-ga stalls (e.g. restarting), then its late reply arrives after the client gave up.
      await delay(400);
      await conn.send({ return: { version: "late" } });
      for (;;) {
        const req = await conn.recv().catch(() => undefined);
        if (!req) return;
        if (req.execute === "guest-sync-delimited") await conn.syncReply(req);
        else await conn.send({ return: { version: first ? "fresh" : "again" } }), first = false;
      }
    },
  });
  await using client = await connectAgent(agent.address);
  const err = await client.executeRaw("guest-info", undefined, { timeout: 200 }).catch((e) => e);
  assert.ok(err instanceof TimeoutError);
  assert.match(err.message, /guest-info.*is qemu-ga started/s);
  await delay(300); // the late reply is now in the stream
  assert.deepEqual(await client.executeRaw("guest-info"), { version: "fresh" });
  assert.equal(agent.connections[0].delimitersReceived, 2, "resynced after the timeout");
});

Deno.test("agent: the agent closing the connection mid-command is a ConnectionClosedError", async () => {
  await using agent = await startFakeAgent((req) => req.execute === "guest-exec" ? "close" : ok());
  await using client = await connectAgent(agent.address);
  const err = await client.exec("/bin/true").catch((e) => e);
  assert.ok(err instanceof ConnectionClosedError, String(err));
  assert.equal(err.reason, "peer");
  assert.match(err.message, /closed the connection.*connect again/);
  // And every later call says the same, at once.
  await assert.rejects(client.ping(), ConnectionClosedError);
});

Deno.test("agent: garbage while a command is pending is a ProtocolError; the next command resyncs", async () => {
  let n = 0;
  await using agent = await startFakeAgent(async (_req, conn) => {
    if (n++ === 0) {
      await conn.write("this is not json\n");
      return "silent";
    }
    return ok({ n });
  });
  await using client = await connectAgent(agent.address);
  await assert.rejects(client.executeRaw("guest-ping"), ProtocolError);
  assert.deepEqual(await client.executeRaw("guest-ping"), { n: 2 });
  assert.equal(agent.connections[0].delimitersReceived, 2);
});

Deno.test("agent: an oversize reply is a ProtocolError and the stream recovers", async () => {
  let n = 0;
  await using agent = await startFakeAgent(() => n++ === 0 ? ok("x".repeat(200_000)) : ok("small"));
  await using client = await connectAgent(agent.address, { maxMessageSize: 100_000 });
  await assert.rejects(client.executeRaw("guest-ping"), ProtocolError);
  assert.equal(await client.executeRaw("guest-ping"), "small");
});

Deno.test("agent: an error reply is a typed AgentCommandError (a QmpCommandError)", async () => {
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-file-open"
      ? {
        error: {
          class: "GenericError",
          desc:
            `failed to open file '${req.arguments?.path}' (mode: 'r'): No such file or directory`,
        },
      }
      : ok()
  );
  await using client = await connectAgent(agent.address);
  const err = await client.readFile("/nope").catch((e) => e);
  assert.ok(err instanceof AgentCommandError);
  assert.ok(err instanceof QmpCommandError);
  assert.equal(err.class, "GenericError");
  assert.equal(err.command, "guest-file-open");
  assert.deepEqual(err.arguments, { path: "/nope", mode: "r" });
  assert.match(err.message, /guest agent: guest-file-open failed: .*'\/nope'.*\(GenericError\)/);
  // No handle was opened, so none is closed.
  assert.ok(!agent.connections[0].requests.some((r) => r.execute === "guest-file-close"));
});

Deno.test("agent: exec bounds output client-side and reports the agent's own truncation", async () => {
  const big = new Uint8Array(3 * 1024 * 1024).fill(0x61);
  await using agent = await startFakeAgent((req) => {
    if (req.execute === "guest-exec") return ok({ pid: 42 });
    return ok({
      exited: true,
      exitcode: 0,
      "out-data": encodeBase64(big),
      "err-data": encodeBase64(new TextEncoder().encode("warn\n")),
      "err-truncated": true, // qemu-ga cut it at its 16 MiB cap
    });
  });
  await using client = await connectAgent(agent.address);
  const r = await client.exec("/bin/yes", [], { maxOutput: 1024 * 1024 });
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdoutBytes.length, 1024 * 1024);
  assert.equal(r.stdoutTruncated, true);
  assert.equal(r.stderr, "warn\n");
  assert.equal(r.stderrTruncated, true);
  const exec = agent.connections[0].requests.find((q) => q.execute === "guest-exec")!;
  assert.deepEqual(exec.arguments, { path: "/bin/yes", arg: [], "capture-output": true });
});

Deno.test("agent: exec sends input and env, polls with backoff, reports a signal", async () => {
  let polls = 0;
  const t0 = Date.now();
  await using agent = await startFakeAgent((req) => {
    if (req.execute === "guest-exec") return ok({ pid: 7 });
    assert.deepEqual(req.arguments, { pid: 7 });
    return ++polls < 6 ? ok({ exited: false }) : ok({ exited: true, signal: 9 });
  });
  await using client = await connectAgent(agent.address);
  const r = await client.exec("/bin/cat", ["-"], { input: "hi", env: { A: "1" } });
  assert.equal(r.exitCode, null);
  assert.equal(r.signal, 9);
  assert.equal(r.stdout, "");
  // 5 + 10 + 20 + 40 + 80 ms of backoff at least.
  assert.ok(Date.now() - t0 >= 150, `polled too fast: ${Date.now() - t0} ms`);
  const exec = agent.connections[0].requests.find((q) => q.execute === "guest-exec")!;
  assert.equal(exec.arguments?.["input-data"], btoa("hi"));
  assert.deepEqual(exec.arguments?.env, ["A=1"]);
});

Deno.test("agent: exec that never exits times out with the pid and a left-running warning", async () => {
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-exec" ? ok({ pid: 1234 }) : ok({ exited: false })
  );
  await using client = await connectAgent(agent.address);
  const t0 = Date.now();
  const err = await client.exec("/bin/sleep", ["inf"], { timeout: 400 }).catch((e) => e);
  assert.ok(err instanceof AgentExecTimeoutError, String(err));
  assert.ok(err instanceof TimeoutError);
  assert.equal(err.pid, 1234);
  assert.match(err.message, /left running in the guest/);
  assert.ok(Date.now() - t0 < 1500);
  const polls = agent.connections[0].requests.filter((q) => q.execute === "guest-exec-status");
  assert.ok(polls.length < 20, `backoff: ${polls.length} polls in 400 ms`);
  // The connection is still usable.
  await client.ping();
});

Deno.test("agent: readFile closes the handle when a read fails; writeFile writes in chunks", async () => {
  const written: number[] = [];
  await using agent = await startFakeAgent((req) => {
    switch (req.execute) {
      case "guest-file-open":
        return ok(req.arguments?.path === "/bad" ? 5 : 6);
      case "guest-file-read":
        return { error: { class: "GenericError", desc: "read failed: Input/output error" } };
      case "guest-file-write": {
        const count = atob(String(req.arguments?.["buf-b64"])).length;
        written.push(count);
        return ok({ count, eof: false });
      }
      default:
        return ok();
    }
  });
  await using client = await connectAgent(agent.address);
  await assert.rejects(client.readFile("/bad"), AgentCommandError);
  const closes = () =>
    agent.connections[0].requests.filter((r: AgentRequest) => r.execute === "guest-file-close");
  assert.deepEqual(closes().map((r) => r.arguments), [{ handle: 5 }]);
  await client.writeFile("/x", new Uint8Array(2.5 * 1024 * 1024));
  assert.deepEqual(written, [1024 * 1024, 1024 * 1024, 512 * 1024]);
  assert.deepEqual(closes().map((r) => r.arguments), [{ handle: 5 }, { handle: 6 }]);
  const open = agent.connections[0].requests.filter((r) => r.execute === "guest-file-open");
  assert.equal(open[1].arguments?.mode, "w");
});

Deno.test("agent: freeze returns a handle that thaws once, also through await using", async () => {
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-fsfreeze-freeze-list" ? ok(1) : ok(2)
  );
  await using client = await connectAgent(agent.address);
  {
    await using frozen = await client.freeze();
    assert.equal(frozen.count, 2);
  }
  const some = await client.freeze({ mountpoints: ["/"] });
  assert.equal(some.count, 1);
  assert.equal(await some.thaw(), 2);
  assert.equal(await some.thaw(), 2);
  const names = agent.connections[0].requests.map((r) => r.execute).filter((n) =>
    n !== "guest-sync-delimited"
  );
  assert.deepEqual(names, [
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-thaw",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
  ]);
});

Deno.test("agent: shutdown takes silence as success, rejects an error reply, resyncs after", async () => {
  let refuse = false;
  await using agent = await startFakeAgent((req) => {
    if (req.execute === "guest-shutdown" || req.execute === "guest-suspend-ram") {
      return refuse ? { error: { class: "GenericError", desc: "shutdown denied" } } : "silent";
    }
    return ok("pong");
  });
  await using client = await connectAgent(agent.address);
  const t0 = Date.now();
  await client.shutdown({ mode: "halt", replyWait: 200 });
  assert.ok(Date.now() - t0 < 1000);
  const sd = agent.connections[0].requests.find((r) => r.execute === "guest-shutdown")!;
  assert.deepEqual(sd.arguments, { mode: "halt" });
  refuse = true;
  await assert.rejects(client.shutdown({ replyWait: 2000 }), AgentCommandError);
  assert.equal(await client.executeRaw("guest-ping"), "pong");
  // execute() of a no-reply command does not hang either.
  refuse = false;
  assert.equal(await client.execute("guest-suspend-ram").catch((e) => e), undefined);
});

Deno.test("agent: shutdown with a QMP client resolves on SHUTDOWN; a closing connection is success", async () => {
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-shutdown" ? "close" : ok()
  );
  await using client = await connectAgent(agent.address);
  const asked: string[] = [];
  let fire!: () => void;
  const qmp = {
    waitEvent(name: "SHUTDOWN" | "RESET") {
      asked.push(name);
      return new Promise<unknown>((resolve) => fire = () => resolve({ event: name }));
    },
  };
  let done = false;
  const p = client.shutdown({ qmp, replyWait: "5s" }).then(() => done = true);
  await delay(150);
  assert.equal(done, false, "waits for the event");
  fire();
  await p;
  assert.deepEqual(asked, ["SHUTDOWN"]);
});

Deno.test("agent: waitReady keeps trying until a late agent answers", async () => {
  const t0 = Date.now();
  await using agent = await startFakeAgent({
    script: async (conn) => {
      for (;;) {
        const req = await conn.recv().catch(() => undefined);
        if (!req) return;
        if (Date.now() - t0 > 700 && req.execute === "guest-sync-delimited") {
          await conn.syncReply(req);
        } else if (req.execute !== "guest-sync-delimited") await conn.send({ return: {} });
      }
    },
  });
  await using client = await connectAgent(agent.address, { sync: false });
  await client.waitReady({ timeout: "5s", attempt: 200 });
  assert.ok(Date.now() - t0 >= 700);
  assert.ok(agent.connections[0].delimitersReceived >= 3);
  await client.ping();
  const err = await (async () => {
    await using silent = await startFakeAgent({
      script: async (conn) => {
        while (await conn.recv(10_000).catch(() => undefined));
      },
    });
    await using c2 = await connectAgent(silent.address, { sync: false });
    return await c2.waitReady({ timeout: 300, attempt: 100 }).catch((e) => e);
  })();
  assert.ok(err instanceof TimeoutError);
  assert.match(err.message, /Waiting for the guest agent.*is qemu-ga started/s);
});

Deno.test("agent: calls run one at a time; close() fails the pending one", async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  await using agent = await startFakeAgent(async (req) => {
    if (req.execute === "guest-info") return "silent";
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await delay(20);
    inFlight--;
    return ok(req.arguments?.n);
  });
  const client = await connectAgent(agent.address);
  const results = await Promise.all(
    [1, 2, 3, 4].map((n) => client.executeRaw("guest-echo", { n })),
  );
  assert.deepEqual(results, [1, 2, 3, 4]);
  assert.equal(maxInFlight, 1);
  const pending = client.info();
  await delay(50);
  await client.close();
  const err = await pending.catch((e) => e);
  assert.ok(err instanceof ConnectionClosedError);
  assert.equal(err.reason, "client");
  assert.equal(client.closed, true);
});

Deno.test("agent: a Transport can be passed instead of an address", async () => {
  await using agent = await startFakeAgent(() => ok("via transport"));
  const conn = await Deno.connect({ transport: "unix", path: agent.path });
  await using client = await connectAgent(conn);
  assert.ok(client instanceof AgentClient);
  assert.equal(await client.executeRaw("guest-ping"), "via transport");
});

Deno.test("agent: portClosed fails the pending call at once; calls resume after portOpened + resync", async () => {
  let stale = true;
  await using agent = await startFakeAgent(async (req, conn) => {
    if (req.execute === "guest-exec-status" && stale) {
      stale = false;
      // The agent dies; its restarted successor answers the stale request later.
      await delay(300);
      await conn.send({ error: { class: "GenericError", desc: "Invalid parameter 'pid'" } });
      return "silent";
    }
    return ok(req.execute === "guest-exec" ? { pid: 9 } : { exited: true, exitcode: 0 });
  });
  await using client = await connectAgent(agent.address);
  const pending = client.exec("/bin/sh", ["-c", "kill -9 $PPID"]).catch((e) => e);
  await delay(100);
  const t0 = Date.now();
  client.portClosed("qemu-ga closed its port (VSERPORT_CHANGE open=false)");
  const err = await pending;
  assert.ok(err instanceof AgentPortClosedError, String(err));
  assert.ok(Date.now() - t0 < 100, "at once, not after a timeout");
  assert.match(err.message, /VSERPORT_CHANGE.*waitReady/);
  assert.equal(client.portClosedReason, err.reason);
  // While the port is closed, calls fail fast.
  await assert.rejects(client.ping(), AgentPortClosedError);
  await delay(400); // the stale error reply is now in the stream
  client.portOpened();
  await client.waitReady({ timeout: "2s" });
  const r = await client.exec("/bin/true");
  assert.equal(r.exitCode, 0, "the stale 'Invalid parameter' reply was discarded");
});

Deno.test("agent: guest-sync-delimited run by hand returns its id (its 0xFF is expected)", async () => {
  await using agent = await startFakeAgent(() => ok());
  await using client = await connectAgent(agent.address);
  assert.equal(await client.execute("guest-sync-delimited", { id: 77 }, { timeout: 1000 }), 77);
  assert.deepEqual(await client.execute("guest-ping"), {});
});
