/**
 * Security checks: the launcher's private directory and socket, the warning
 * for non-loopback TCP addresses, end-to-end redaction of secrets in
 * transcripts against real QEMU (proven received by QEMU with a LUKS image
 * that only the real passphrase opens), and the limits that are on by default.
 */
import assert from "node:assert/strict";
import { connect, type TranscriptEntry } from "../../lib/client.ts";
import {
  ConnectionClosedError,
  EventOverflowError,
  ProtocolError,
  QmpCommandError,
} from "../../lib/errors.ts";
import { EventListener } from "../../lib/events.ts";
import { DEFAULT_MAX_MESSAGE_SIZE } from "../../lib/framing.ts";
import { launch } from "../../lib/machine.ts";
import { REDACTED } from "../../lib/redact.ts";
import { startFakeServer } from "../helpers/fake_server.ts";
import {
  allSettledOnce,
  assertNoUnhandled,
  exists,
  guardUnhandled,
  printTable,
  type Row,
  track,
  within,
} from "./harness.ts";

guardUnhandled();

const rows: Row[] = [];
const CLIENT = new URL("../../lib/client.ts", import.meta.url).href;
const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0");

Deno.test("launch(): private 0700 temp dir owned by us; QMP socket inside it", async () => {
  // Our uid and umask, without --allow-sys: from a directory we create (mkdir 0777 & ~umask).
  const probe = await Deno.makeTempDir({ prefix: "qmpkit-probe-" });
  await Deno.mkdir(`${probe}/d`);
  const me = (await Deno.stat(probe)).uid;
  const umask = ~(await Deno.stat(`${probe}/d`)).mode! & 0o777;
  await Deno.remove(probe, { recursive: true });
  const vm = await launch({ machine: "none", timeout: "20s" });
  try {
    const dir = await Deno.stat(vm.dir);
    const sock = await Deno.lstat(vm.socketPath);
    assert.equal(dir.mode! & 0o777, 0o700, `dir mode ${octal(dir.mode!)}`);
    assert.equal(dir.uid, me, "dir owned by the launching user");
    assert.equal(sock.isSocket, true);
    assert.equal(sock.uid, me);
    assert.equal(vm.socketPath, `${vm.dir}/qmp.sock`);
    // Whatever QEMU's umask gives the socket, nobody else can traverse the dir to reach it,
    // and connect(2) on a unix socket needs write permission, which others never get here.
    assert.equal(sock.mode! & 0o002, 0, `socket is world-writable: ${octal(sock.mode!)}`);
    rows.push({ check: "launch() temp dir", result: `${vm.dir} mode ${octal(dir.mode!)}, uid ok` });
    rows.push({
      check: "QMP socket as QEMU creates it",
      result: `mode ${octal(sock.mode!)} (umask ${octal(umask)}); others: no write ⇒ ` +
        `no connect, and no search permission on the 0700 dir`,
    });
  } finally {
    await vm.shutdown();
  }
  assert.equal(await exists(vm.dir), false, "dir removed after shutdown");
});

/** Runs connect() to `address` in a subprocess; returns its stderr and stdout. */
async function connectInSubprocess(address: string): Promise<{ stderr: string; stdout: string }> {
  const code = `import { connect } from ${JSON.stringify(CLIENT)};
try {
  const c = await connect(${JSON.stringify(address)}, { timeout: 200 });
  await c.close();
  console.log("CONNECTED");
} catch (e) {
  console.log("ERR " + e.name);
}`;
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  const out = await proc.output();
  clearTimeout(timer);
  return {
    stderr: new TextDecoder().decode(out.stderr),
    stdout: new TextDecoder().decode(out.stdout),
  };
}

Deno.test("connect() to a non-loopback TCP address warns once on stderr; loopback does not", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (l.addr as Deno.NetAddr).port;
  l.close();
  const remote = await connectInSubprocess("tcp:192.0.2.1:4444");
  const warning = remote.stderr.trim().split("\n");
  assert.equal(warning.length, 1, `stderr: ${remote.stderr}`);
  assert.match(
    warning[0],
    /^qmpkit: warning: tcp:192\.0\.2\.1:4444 is not a loopback address; QMP has no authentication or encryption, so anyone who can reach it controls the VM$/,
  );
  assert.match(remote.stdout, /^ERR (TimeoutError|ConnectionError)/);
  rows.push({ check: "connect tcp:192.0.2.1:4444", result: `stderr: ${warning[0].slice(0, 70)}…` });

  for (const local of [`tcp:127.0.0.1:${closedPort}`, `tcp:localhost:${closedPort}`]) {
    const res = await connectInSubprocess(local);
    assert.equal(res.stderr, "", `${local} printed: ${res.stderr}`);
    assert.match(res.stdout, /^ERR ConnectionError/);
    rows.push({ check: `connect ${local.replace(/\d+$/, "PORT")}`, result: "stderr empty" });
  }
});

Deno.test("transcripts redact secrets end to end; QEMU still gets the real values", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-sec-" });
  const PASSPHRASE = "Corr3ct-h0rse-b4ttery";
  const VNC_PW = "vncpw-9x7";
  const HMP_PW = "hmppw-2q5";
  const image = `${dir}/disk.luks`;
  try {
    // qemu-img times PBKDF2 on the CPU clock to pick an iteration count; on a loaded host it
    // sometimes fails with "Unable to get accurate CPU usage". That is QEMU's measurement, not
    // what this test is about: try again a few times.
    let made: Deno.CommandOutput | undefined;
    for (let attempt = 0; attempt < 5 && !made?.success; attempt++) {
      await Deno.remove(image).catch(() => {});
      made = await new Deno.Command("qemu-img", {
        args: [
          "create",
          "-f",
          "luks",
          "--object",
          `secret,id=s0,data=${PASSPHRASE}`,
          "-o",
          "key-secret=s0,iter-time=10",
          image,
          "1M",
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
    }
    assert.equal(made!.code, 0, new TextDecoder().decode(made!.stderr));

    const log: TranscriptEntry[] = [];
    const vm = await launch({
      machine: "none",
      timeout: "20s",
      args: ["-vnc", `unix:${dir}/vnc.sock,password=on`],
      qmp: { transcript: (e) => log.push(e) },
    });
    try {
      const q = vm.qmp;
      await q.execute("object-add", { "qom-type": "secret", id: "sec0", data: PASSPHRASE });
      // Proof QEMU received the real passphrase: it opens the LUKS image.
      await q.execute("blockdev-add", {
        driver: "luks",
        "node-name": "disk0",
        "key-secret": "sec0",
        file: { driver: "file", filename: image },
      });
      // Control: a wrong passphrase does not.
      await q.execute("object-add", { "qom-type": "secret", id: "bad0", data: "not-it" });
      await assert.rejects(
        q.execute("blockdev-add", {
          driver: "luks",
          "node-name": "disk1",
          "key-secret": "bad0",
          file: { driver: "file", filename: image },
        }),
        (e: unknown) => e instanceof QmpCommandError && /Invalid password/.test(e.desc),
      );
      // VNC passwords over QMP and over HMP (-vnc ...,password=on makes set_password valid).
      assert.deepEqual(await q.execute("set_password", { protocol: "vnc", password: VNC_PW }), {});
      assert.equal(
        await q.execute("human-monitor-command", { "command-line": `set_password vnc ${HMP_PW}` }),
        "",
      );
      assert.equal((await q.execute("query-vnc")).auth, "vnc");
    } finally {
      await vm.shutdown();
    }

    const text = JSON.stringify(log);
    for (const secret of [PASSPHRASE, "not-it", VNC_PW, HMP_PW]) {
      assert.equal(text.includes(secret), false, `transcript contains ${secret}`);
    }
    const sent = log.filter((e) => e.direction === "send").map((e) => e.message);
    const args = (cmd: string) =>
      sent.filter((m) => m.execute === cmd).map((m) => m.arguments as Record<string, unknown>);
    assert.deepEqual(args("object-add").map((a) => a.data), [REDACTED, REDACTED]);
    assert.deepEqual(args("set_password")[0], { protocol: "vnc", password: REDACTED });
    assert.deepEqual(args("human-monitor-command")[0], {
      "command-line": `set_password vnc ${REDACTED}`,
    });
    // Non-secret content stays readable.
    assert.equal(args("object-add")[0].id, "sec0");
    assert.equal(args("blockdev-add")[0].driver, "luks");
    rows.push({
      check: "transcript vs real QEMU",
      result: `object-add data, set_password, HMP set_password → ${REDACTED}; ` +
        `LUKS opened with the real passphrase (wrong one refused)`,
    });
    // A reference to a secret object is an id, not a secret: it stays readable.
    assert.equal(args("blockdev-add")[0]["key-secret"], "sec0");
    rows.push({
      check: "secret references kept",
      result: `blockdev-add "key-secret" (an object id) → ` +
        String(args("blockdev-add")[0]["key-secret"]),
    });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  await assertNoUnhandled();
});

Deno.test("a secret read back with qom-get is redacted in the transcript", async () => {
  // QEMU 7.2 returns a secret object's `data` to qom-get; the reply is logged as is.
  const SECRET = "qom-readback-s3cret";
  const log: TranscriptEntry[] = [];
  const vm = await launch({
    machine: "none",
    timeout: "20s",
    qmp: { transcript: (e) => log.push(e) },
  });
  let value: unknown;
  try {
    await vm.qmp.execute("object-add", { "qom-type": "secret", id: "sec0", data: SECRET });
    value = await vm.qmp.execute("qom-get", { path: "/objects/sec0", property: "data" });
  } finally {
    await vm.shutdown();
  }
  assert.equal(value, SECRET, "QEMU hands the secret back (the caller gets it)");
  const leaked = log.filter((e) => JSON.stringify(e.message).includes(SECRET));
  assert.deepEqual(
    leaked.map((e) => `${e.direction} ${JSON.stringify(e.message)}`),
    [],
    "transcript entries holding the secret",
  );
});

Deno.test("limits on by default: 10 MiB messages, 1000-event listener buffers", async (t) => {
  assert.equal(DEFAULT_MAX_MESSAGE_SIZE, 10 * 1024 * 1024);

  await t.step("EventListener default bufferSize is 1000", async () => {
    const l = new EventListener();
    for (let i = 0; i <= 1000; i++) {
      const timestamp = { seconds: 0, microseconds: 0 };
      l.deliver({ event: "X", data: { i }, timestamp, time: undefined, seq: i });
    }
    assert.equal(l.size, 1000);
    assert.equal(l.drain().length, 1000);
    await assert.rejects(l.next(), (e: unknown) => {
      assert.ok(e instanceof EventOverflowError);
      assert.equal(e.bufferSize, 1000);
      return true;
    });
  });

  await t.step("client.events() and the client's framer use the defaults", async () => {
    const size = DEFAULT_MAX_MESSAGE_SIZE;
    await using server = await startFakeServer(async (c) => {
      await c.handshake();
      const first = await c.recv();
      for (let i = 0; i < 1001; i++) await c.event("RESET", { guest: false, reason: "none" });
      // Just under the limit: accepted.
      const fits = `{"return": "${"a".repeat(size - 100)}", "id": ${first.id}}`;
      assert.ok(fits.length <= size);
      await c.write(fits + "\r\n");
      const second = await c.recv();
      // One byte over: refused, before the message even ends.
      await c.write(`{"id": ${second.id}, "return": "${"b".repeat(size)}`).catch(() => {});
      await c.eof;
    });
    await using client = await connect(server.address, { timeout: "5s", commandTimeout: "20s" });
    const events = client.events();
    const big = await client.executeRaw("query-status");
    assert.equal((big as string).length, size - 100);
    assert.equal(events.size, 1000, "1000 buffered, the 1001st overflowed");
    assert.equal(events.drain().length, 1000);
    await assert.rejects(events.next(), EventOverflowError);
    const over = track("oversize reply", client.executeRaw("query-status"));
    await allSettledOnce([over], 20_000);
    assert.ok(over.error instanceof ConnectionClosedError, String(over.error));
    assert.ok(over.error.cause instanceof ProtocolError);
    assert.match(over.error.cause.message, /larger than the 10485760-byte limit/);
    await within(client.closed, 2000, "closed");
  });
  rows.push({
    check: "defaults",
    result: "DEFAULT_MAX_MESSAGE_SIZE = 10485760 (enforced by connect()); events() bufferSize 1000",
  });
  await assertNoUnhandled();
});

Deno.test("security table", () => {
  printTable("Security checks", rows);
  assert.ok(rows.length >= 5);
});
