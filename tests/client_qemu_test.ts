/**
 * Integration tests of the client against a real QEMU 7.2, over both a unix
 * socket and TCP. Every wait is bounded: connect/command/event timeouts, and
 * `within()` around anything else that could hang.
 */
import assert from "node:assert/strict";
import {
  connect,
  type ConnectOptions,
  type QmpClient,
  type TranscriptEntry,
} from "../lib/client.ts";
import {
  AbortError,
  AddressError,
  ConnectionClosedError,
  ConnectionError,
  NegotiationError,
  QmpCommandError,
  TimeoutError,
} from "../lib/errors.ts";
import type { QmpEvent } from "../lib/protocol.ts";
import { delay, freePort, startQemu, within } from "./helpers/qemu.ts";

const TRANSPORTS = [
  { name: "unix", tcp: false },
  { name: "tcp", tcp: true },
] as const;

/** Connects with bounded defaults; per-test options override them. */
function open(address: string, options: ConnectOptions = {}): Promise<QmpClient> {
  return connect(address, { timeout: "10s", commandTimeout: "10s", ...options });
}

/** Asserts an event's `time` is a Date within a few seconds of now. */
function assertRecent(ev: QmpEvent): void {
  assert.ok(ev.time instanceof Date, `${ev.event}.time should be a Date`);
  const skew = Math.abs(ev.time.getTime() - Date.now());
  assert.ok(skew < 5000, `${ev.event}.time is ${skew} ms away from now`);
}

/** Index of the first transcript entry matching `pred`, asserting there is one. */
function indexOf(log: TranscriptEntry[], pred: (e: TranscriptEntry) => boolean, what: string) {
  const i = log.findIndex(pred);
  assert.ok(i >= 0, `transcript has no ${what}`);
  return i;
}

for (const t of TRANSPORTS) {
  const T = `[${t.name}]`;

  Deno.test(`${T} greeting reports QEMU 7.2 and offers oob; default negotiation`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    assert.equal(c.greeting.version.qemu.major, 7);
    assert.equal(c.greeting.version.qemu.minor, 2);
    assert.equal(typeof c.greeting.version.qemu.micro, "number");
    assert.ok(c.greeting.capabilities.includes("oob"));
    assert.equal(c.state, "open");
    assert.equal(c.negotiated, true);
    assert.equal(c.oob, false);
    assert.deepEqual(await c.execute("query-status"), {
      status: "running",
      singlestep: false,
      running: true,
    });
    // exec-oob without the capability fails locally, nothing is sent.
    await assert.rejects(c.executeOob("query-yank"), NegotiationError);
    assert.equal(c.pendingCommands, 0);
  });

  Deno.test(`${T} oob: true enables oob; executeOob("query-yank") works`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    const log: TranscriptEntry[] = [];
    await using c = await open(q.address, { oob: true, transcript: (e) => log.push(e) });
    assert.equal(c.oob, true);
    assert.deepEqual(log[1].message, {
      execute: "qmp_capabilities",
      arguments: { enable: ["oob"] },
      id: 1,
    });
    const yanks = await c.executeOob("query-yank");
    assert.deepEqual(yanks, [{ type: "chardev", id: "compat_monitor0" }]);
    assert.equal(log.at(-2)?.message["exec-oob"], "query-yank");
    // An in-band-only command sent out-of-band is refused by QEMU.
    await assert.rejects(c.executeOob("query-status"), (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.class, "GenericError");
      assert.equal(e.desc, "The command query-status does not support OOB");
      return true;
    });
  });

  Deno.test(`${T} negotiate: false, commands fail with CommandNotFound until negotiate()`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address, { negotiate: false });
    assert.equal(c.negotiated, false);
    assert.equal(c.greeting.version.qemu.minor, 2);
    await assert.rejects(c.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.class, "CommandNotFound");
      assert.equal(e.command, "query-status");
      assert.match(e.desc, /qmp_capabilities/);
      return true;
    });
    await c.negotiate({ oob: true, timeout: "5s" });
    assert.equal(c.negotiated, true);
    assert.equal(c.oob, true);
    assert.equal((await c.execute("query-status")).status, "running");
    await assert.rejects(c.negotiate(), NegotiationError);
  });

  Deno.test(`${T} query-commands lists QEMU 7.2's 216 commands`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    const cmds = await c.execute("query-commands");
    const names = cmds.map((x) => x.name);
    assert.equal(names.length, 216);
    assert.equal(new Set(names).size, 216);
    for (const n of ["qmp_capabilities", "query-status", "quit", "device_add", "query-yank"]) {
      assert.ok(names.includes(n), `${n} missing`);
    }
  });

  Deno.test(`${T} stop/cont on -M pc -S: STOP/RESUME caught by waitEvent armed first`, async () => {
    await using q = await startQemu({ machine: "pc", paused: true, tcp: t.tcp });
    const log: TranscriptEntry[] = [];
    await using c = await open(q.address, { transcript: (e) => log.push(e) });
    assert.equal((await c.execute("query-status")).status, "prelaunch");

    const resumed = c.waitEvent("RESUME", { timeout: "5s" });
    assert.deepEqual(await c.execute("cont"), {});
    const resume = await resumed;
    assert.equal(resume.event, "RESUME");
    assert.equal(resume.data, undefined);
    assertRecent(resume);
    assert.equal((await c.execute("query-status")).status, "running");

    const stopped = c.waitEvent("STOP", { timeout: "5s" });
    await c.execute("stop");
    const stop = await stopped;
    assert.equal(stop.event, "STOP");
    assertRecent(stop);
    assert.ok(stop.seq > resume.seq);
    assert.deepEqual(await c.execute("query-status"), {
      status: "paused",
      singlestep: false,
      running: false,
    });

    // The race-prone order really happened: each event arrived before its command's reply.
    for (const [cmd, ev] of [["cont", "RESUME"], ["stop", "STOP"]]) {
      const sent = indexOf(log, (e) => e.direction === "send" && e.message.execute === cmd, cmd);
      const id = log[sent].message.id;
      const evAt = indexOf(log, (e) => e.direction === "recv" && e.message.event === ev, ev);
      const retAt = indexOf(
        log,
        (e) => e.direction === "recv" && e.message.id === id && "return" in e.message,
        `${cmd} return`,
      );
      assert.ok(sent < evAt && evAt < retAt, `${ev} should arrive before ${cmd}'s return`);
    }
  });

  Deno.test(`${T} system_reset emits RESET {guest: false, reason: host-qmp-system-reset}`, async () => {
    await using q = await startQemu({ machine: "pc", paused: true, tcp: t.tcp });
    await using c = await open(q.address);
    const reset = c.waitEvent("RESET", { timeout: "5s" });
    assert.deepEqual(await c.execute("system_reset"), {});
    const ev = await reset;
    assert.deepEqual(ev.data, { guest: false, reason: "host-qmp-system-reset" });
    assert.deepEqual(ev.timestamp.seconds > 0, true);
    assertRecent(ev);
  });

  Deno.test(`${T} device_add/device_del usb-tablet, DEVICE_DELETED, DeviceNotFound`, async () => {
    await using q = await startQemu({
      machine: "pc",
      paused: true,
      tcp: t.tcp,
      extraArgs: ["-device", "qemu-xhci"],
    });
    await using c = await open(q.address);
    assert.deepEqual(await c.execute("device_add", { driver: "usb-tablet", id: "tab0" }), {});
    const otherDevice = c.waitEvent("DEVICE_DELETED", { where: { device: "other" }, timeout: 300 });
    const deleted = c.waitEvent("DEVICE_DELETED", { where: { device: "tab0" }, timeout: "5s" });
    assert.deepEqual(await c.execute("device_del", { id: "tab0" }), {});
    const ev = await deleted;
    assert.deepEqual(ev.data, { device: "tab0", path: "/machine/peripheral/tab0" });
    assertRecent(ev);
    await assert.rejects(otherDevice, TimeoutError); // the where filter excluded tab0

    const err = await c.execute("device_del", { id: "tab0" }).then(
      () => assert.fail("second device_del should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof QmpCommandError);
    assert.equal(err.class, "DeviceNotFound");
    assert.equal(err.desc, "Device 'tab0' not found");
    assert.equal(err.command, "device_del");
    assert.deepEqual(err.arguments, { id: "tab0" });
    assert.match(err.message, /device_del failed: Device 'tab0' not found \(DeviceNotFound\)/);
    // The connection is still fine after a command error.
    assert.equal((await c.execute("query-status")).status, "prelaunch");
  });

  Deno.test(`${T} events({names}) iterates RESET, STOP, RESET in order, skipping RESUME`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    const events = c.events({ names: ["RESET", "STOP"], signal: AbortSignal.timeout(10_000) });
    await c.execute("system_reset");
    await c.execute("stop");
    await c.execute("cont"); // RESUME: filtered out
    await c.execute("system_reset");
    const got: QmpEvent[] = [];
    for await (const ev of events) {
      got.push(ev);
      if (got.length === 3) break;
    }
    assert.deepEqual(got.map((e) => e.event), ["RESET", "STOP", "RESET"]);
    assert.deepEqual(got[0].data, { guest: false, reason: "host-qmp-system-reset" });
    assert.ok(got[0].seq < got[1].seq && got[1].seq < got[2].seq);
    for (const ev of got) assertRecent(ev);
    assert.equal(events.ended, true); // break closed the listener
  });

  Deno.test(`${T} 200 concurrent query-status all resolve (oob off)`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    const results = await within(
      Promise.all(Array.from({ length: 200 }, () => c.execute("query-status"))),
      15_000,
      "200 concurrent commands",
    );
    assert.equal(results.length, 200);
    assert.ok(results.every((r) => r.status === "running"));
    assert.equal(c.pendingCommands, 0);
  });

  Deno.test(`${T} 200 concurrent query-status with oob: at most 8 in-band in flight`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    let inFlight = 0;
    let maxInFlight = 0;
    const inband = new Set<unknown>();
    await using c = await open(q.address, {
      oob: true,
      transcript: (e) => {
        if (e.direction === "send" && typeof e.message.execute === "string") {
          inband.add(e.message.id);
          maxInFlight = Math.max(maxInFlight, ++inFlight);
        } else if (e.direction === "recv" && inband.delete(e.message.id)) {
          inFlight--;
        }
      },
    });
    const all = Array.from({ length: 200 }, () => c.execute("query-status"));
    const oob = c.executeOob("query-yank"); // overtakes the client-side queue
    assert.ok(c.pendingCommands >= 201);
    const [results, yanks] = await within(
      Promise.all([Promise.all(all), oob]),
      15_000,
      "200 concurrent commands with oob",
    );
    assert.equal(results.length, 200);
    assert.ok(results.every((r) => r.status === "running"));
    assert.deepEqual(yanks, [{ type: "chardev", id: "compat_monitor0" }]);
    assert.equal(maxInFlight, 8);
    assert.equal(inFlight, 0);
    assert.equal(c.pendingCommands, 0);
  });

  Deno.test(`${T} per-command timeout while QEMU is frozen; late reply ignored`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    const warnings: Error[] = [];
    await using c = await open(q.address, { onWarning: (w) => warnings.push(w) });
    q.child.kill("SIGSTOP"); // an honest way to make QEMU slow
    try {
      const t0 = Date.now();
      const err = await c.execute("query-status", undefined, { timeout: 200 }).then(
        () => assert.fail("should time out"),
        (e: unknown) => e,
      );
      const took = Date.now() - t0;
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.timeoutMs, 200);
      assert.match(err.message, /query-status did not complete within 200ms/);
      assert.ok(took >= 190 && took < 2000, `timed out after ${took} ms`);
      assert.equal(c.pendingCommands, 0);

      // Abort in flight as well.
      const ac = new AbortController();
      const aborted = c.execute("query-status", undefined, { signal: ac.signal });
      setTimeout(() => ac.abort(new Error("user gave up")), 50);
      await assert.rejects(aborted, (e: unknown) => {
        assert.ok(e instanceof AbortError);
        assert.equal((e.cause as Error).message, "user gave up");
        return true;
      });
    } finally {
      q.child.kill("SIGCONT");
    }
    // The two late replies are discarded silently; the connection goes on.
    assert.equal((await c.execute("query-status", undefined, { timeout: "5s" })).status, "running");
    assert.deepEqual(warnings, []);
    assert.equal(c.state, "open");
  });

  Deno.test(`${T} an already-aborted signal rejects with AbortError and sends nothing`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    const log: TranscriptEntry[] = [];
    await using c = await open(q.address, { transcript: (e) => log.push(e) });
    const before = log.length;
    const ac = new AbortController();
    ac.abort(new Error("no"));
    await assert.rejects(c.execute("query-status", undefined, { signal: ac.signal }), AbortError);
    await assert.rejects(c.waitEvent("STOP", { signal: ac.signal }), AbortError);
    assert.equal(log.length, before);
    assert.equal(c.pendingCommands, 0);
    assert.equal((await c.execute("query-status")).running, true);
  });

  Deno.test(`${T} quit: SHUTDOWN host-qmp-quit, closed resolves with reason quit`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    const shutdown = c.waitEvent("SHUTDOWN", { timeout: "5s" });
    assert.deepEqual(await c.execute("quit"), {});
    const ev = await shutdown;
    assert.deepEqual(ev.data, { guest: false, reason: "host-qmp-quit" });
    assertRecent(ev);
    await within(c.closed, 5000, "closed after quit");
    assert.equal(c.state, "closed");
    assert.ok(c.closeError instanceof ConnectionClosedError);
    assert.equal(c.closeError.reason, "quit");
    const t0 = Date.now();
    await assert.rejects(c.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.equal(e.reason, "quit");
      return true;
    });
    assert.ok(Date.now() - t0 < 100, "execute after close should reject at once");
    assert.equal((await within(q.status, 5000, "QEMU exit")).code, 0);
  });

  Deno.test(`${T} QEMU SIGKILLed with a command pending: ConnectionClosedError peer`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    await using c = await open(q.address);
    q.child.kill("SIGSTOP"); // keep the command pending until the kill
    const pending = c.execute("query-status");
    const waiting = c.waitEvent("SHUTDOWN", { timeout: "10s" });
    const events = c.events();
    await delay(50);
    assert.equal(c.pendingCommands, 1);
    q.child.kill("SIGKILL");
    for (const p of [pending, waiting] as Promise<unknown>[]) {
      await assert.rejects(within(p, 5000, "rejection after SIGKILL"), (e: unknown) => {
        assert.ok(e instanceof ConnectionClosedError, String(e));
        assert.equal(e.reason, "peer");
        return true;
      });
    }
    await assert.rejects(events.next(), ConnectionClosedError); // iteration throws: unexpected
    assert.equal(c.closeError?.reason, "peer");
    assert.match(c.closeError!.message, /QEMU closed the connection/);
    assert.equal((await within(q.status, 5000, "QEMU exit")).signal, "SIGKILL");
  });

  Deno.test(`${T} connect with retry started before QEMU listens succeeds`, async () => {
    let pending: Promise<QmpClient> | undefined;
    let startedAt = 0;
    await using q = await startQemu({
      machine: "none",
      tcp: t.tcp,
      beforeSpawn: async (address) => {
        startedAt = Date.now();
        pending = open(address, { retry: true, timeout: "10s" });
        pending.catch(() => {}); // handled below
        await delay(150); // connect is now retrying against a missing socket / closed port
      },
    });
    assert.ok(pending);
    await using c = await pending;
    assert.ok(Date.now() - startedAt >= 150);
    assert.equal(c.address, q.address);
    assert.equal((await c.execute("query-status")).status, "running");
  });

  Deno.test(`${T} connect without retry to nothing fails fast with a helpful ConnectionError`, async () => {
    const tmp = await Deno.makeTempDir({ prefix: "qmpkit-test-" });
    try {
      const address = t.tcp ? `tcp:127.0.0.1:${freePort()}` : `unix:${tmp}/missing.sock`;
      const t0 = Date.now();
      const err = await open(address).then(
        () => assert.fail("connect should fail"),
        (e: unknown) => e,
      );
      assert.ok(Date.now() - t0 < 1000, "should fail at once");
      assert.ok(err instanceof ConnectionError, String(err));
      assert.ok(!(err instanceof ConnectionClosedError));
      assert.equal(err.address, address);
      assert.ok(err.message.includes(address), err.message);
      if (t.tcp) assert.match(err.message, /Nothing is listening/);
      else assert.match(err.message, /No socket exists.*server=on,wait=off.*retry: true/s);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });

  Deno.test(`${T} connect with retry to nothing gives up at its timeout`, async () => {
    const tmp = await Deno.makeTempDir({ prefix: "qmpkit-test-" });
    try {
      const address = t.tcp ? `tcp:127.0.0.1:${freePort()}` : `unix:${tmp}/never.sock`;
      const t0 = Date.now();
      const err = await open(address, { retry: true, timeout: 300 }).then(
        () => assert.fail("connect should time out"),
        (e: unknown) => e,
      );
      const took = Date.now() - t0;
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.timeoutMs, 300);
      // The message should say why every attempt failed (lib/transport.ts builds a
      // "gave up after N attempts (last: ...)" hint for this).
      assert.match(err.message, t.tcp ? /refused/i : /No such file/i);
      assert.ok(took >= 280 && took < 1000, `took ${took} ms`);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });

  Deno.test(`${T} a second client times out waiting for the greeting`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    const first = await open(q.address);
    try {
      const t0 = Date.now();
      const err = await open(q.address, { timeout: 500 }).then(
        () => assert.fail("second client should time out"),
        (e: unknown) => e,
      );
      const took = Date.now() - t0;
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.timeoutMs, 500);
      assert.match(err.message, /greeting/);
      assert.match(err.message, /one client at a time/);
      assert.ok(took >= 450 && took < 3000, `took ${took} ms`);
      // The first client is unaffected.
      assert.equal((await first.execute("query-status")).running, true);
    } finally {
      await first.close();
    }
    // Once the first client leaves, QEMU serves the next one.
    await using third = await open(q.address, { timeout: "5s" });
    assert.equal((await third.execute("query-status")).running, true);
  });

  Deno.test(`${T} transcript records send and recv entries`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    const log: TranscriptEntry[] = [];
    await using c = await open(q.address, { transcript: (e) => log.push(e) });
    await c.execute("query-status");
    assert.deepEqual(log.map((e) => e.direction), ["recv", "send", "recv", "send", "recv"]);
    assert.ok("QMP" in log[0].message);
    assert.deepEqual(log[1].message, { execute: "qmp_capabilities", id: 1 });
    assert.deepEqual(log[2].message, { return: {}, id: 1 });
    assert.deepEqual(log[3].message, { execute: "query-status", id: 2 });
    assert.deepEqual(log[4].message, {
      return: { status: "running", singlestep: false, running: true },
      id: 2,
    });
    for (const e of log) {
      assert.ok(e.time instanceof Date && Math.abs(e.time.getTime() - Date.now()) < 5000);
    }
  });

  Deno.test(`${T} await using closes the connection and frees the monitor`, async () => {
    await using q = await startQemu({ machine: "none", tcp: t.tcp });
    let kept: QmpClient;
    {
      await using c = await open(q.address);
      kept = c;
      assert.equal(c.state, "open");
    }
    assert.equal(kept.state, "closed");
    assert.equal(kept.closeError?.reason, "client");
    await assert.rejects(kept.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.equal(e.reason, "client");
      return true;
    });
    // QEMU serves one client at a time: this only works if the first really closed.
    await using again = await open(q.address, { timeout: "3s" });
    assert.equal((await again.execute("query-status")).running, true);
  });
}

Deno.test("bad addresses throw AddressError before any I/O", async () => {
  const bad: [string, RegExp][] = [
    ["unix:", /unix socket path is empty/],
    ["", /empty/],
    ["tcp:127.0.0.1:99999", /port "99999"/],
    ["127.0.0.1:0", /port "0"/],
    ["::1:4444", /brackets/],
    ["tcp:[::1]4444", /missing ':PORT' after ']'/],
  ];
  for (const [address, why] of bad) {
    const t0 = Date.now();
    await assert.rejects(open(address, { retry: true }), (e: unknown) => {
      assert.ok(e instanceof AddressError, `${address}: ${e}`);
      assert.equal(e.address, address);
      assert.match(e.message, why);
      assert.match(e.message, /unix:\/path\/to\/qmp\.sock/);
      return true;
    });
    assert.ok(Date.now() - t0 < 100, `${address} should fail at once, not retry`);
  }
});
