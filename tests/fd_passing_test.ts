/**
 * File descriptor passing (SCM_RIGHTS over an FFI unix socket) against real QEMU:
 * add-fd + blockdev-add /dev/fdset/N + a write read back from the host, getfd/closefd,
 * and the errors (TCP, a plain unix client, a closed descriptor, no --allow-ffi).
 *
 * Permissions: the test task's, plus --allow-ffi.
 */
import assert from "node:assert/strict";
import { launch } from "../lib/machine.ts";
import { connect } from "../lib/client.ts";
import { listen } from "../lib/server.ts";
import { openFd } from "../lib/fd_passing.ts";
import { openUnixFdTransport } from "../lib/transports/unix_fd.ts";
import { FdPassingError, QmpCommandError } from "../lib/errors.ts";
import { within } from "./helpers/qemu.ts";

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

async function tempDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-fd-" });
  await Deno.chmod(dir, 0o700);
  return dir;
}

Deno.test("fd passing: a qcow2 opened in Deno, add-fd, blockdev-add /dev/fdset/1, qemu-io write, read back on the host", async () => {
  const dir = await tempDir();
  try {
    const image = `${dir}/disk.qcow2`;
    assert.equal((await run("qemu-img", ["create", "-q", "-f", "qcow2", image, "1M"])).code, 0);
    const check = ["-f", "qcow2", "-c", "read -P 0x5a 0 4k", image];
    const before = await run("qemu-io", check);
    assert.match(before.out, /Pattern verification failed/, "the pattern is not there yet");

    // console: QEMU's stdout is captured; HMP qemu-io prints its report there.
    await using vm = await launch({ timeout: "20s", console: true });
    await using qmp = await within(
      connect(vm.socketPath, { fdPassing: true, timeout: "5s" }),
      8000,
      "connect",
    );
    {
      using file = openFd(image, { write: true }); // O_RDWR: QEMU opens the image read-write
      const added = await qmp.execute("add-fd", { "fdset-id": 1, opaque: "disk" }, {
        fds: [file],
      });
      assert.equal(added["fdset-id"], 1);
      assert.ok(added.fd > 2);
    } // our copy is closed here; QEMU keeps its own
    const sets = await qmp.execute("query-fdsets");
    assert.deepEqual(sets, [{ "fdset-id": 1, fds: [{ fd: sets[0].fds[0].fd, opaque: "disk" }] }]);

    await qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "disk0",
      file: { driver: "file", filename: "/dev/fdset/1" },
    });
    const io = await qmp.execute("human-monitor-command", {
      "command-line": 'qemu-io disk0 "write -P 0x5a 0 4k"',
    });
    assert.equal(io, "", "no HMP error (unknown node, bad syntax)");
    await vm.console.waitFor("wrote 4096/4096 bytes", { timeout: "5s" });
    await qmp.execute("blockdev-del", { "node-name": "disk0" });
    await qmp.execute("remove-fd", { "fdset-id": 1 });
    assert.deepEqual(await qmp.execute("query-fdsets"), []);

    const after = await run("qemu-io", check);
    assert.equal(after.code, 0, after.out);
    assert.match(after.out, /read 4096\/4096 bytes/);
    assert.doesNotMatch(after.out, /Pattern verification failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fd passing: getfd + closefd; an unknown name is QEMU's error; a raw fd number works too", async () => {
  await using vm = await launch({ timeout: "20s" });
  await using qmp = await within(
    connect(`unix:${vm.socketPath}`, { fdPassing: true, timeout: "5s" }),
    8000,
    "connect",
  );
  using devnull = openFd("/dev/null", { write: true });
  assert.deepEqual(await qmp.execute("getfd", { fdname: "sink" }, { fds: [devnull] }), {});
  assert.deepEqual(await qmp.execute("closefd", { fdname: "sink" }), {});
  await assert.rejects(qmp.execute("closefd", { fdname: "sink" }), (e: unknown) => {
    assert.ok(e instanceof QmpCommandError);
    assert.match(e.desc, /File descriptor named 'sink' not found/);
    return true;
  });
  // getfd without a descriptor: QEMU says none was received (nothing stale was left over).
  await assert.rejects(qmp.execute("getfd", { fdname: "none" }), /No file descriptor supplied/);

  // A raw fd number the caller owns works too.
  await qmp.execute("getfd", { fdname: "raw" }, { fds: [devnull.fd] });
  await qmp.execute("closefd", { fdname: "raw" });
});

Deno.test("fd passing: fd commands in parallel (oob client) each get their own file", async () => {
  await using vm = await launch({ timeout: "20s" });
  await using oob = await connect(vm.socketPath, { fdPassing: true, oob: true, timeout: "5s" });
  // Several fd commands at once, mixed with plain ones, on an oob client (QEMU then reads
  // ahead instead of suspending the monitor per command): each add-fd gets its own file,
  // checked in QEMU's /proc/PID/fd.
  const dir = await tempDir();
  try {
    const files = [1, 2, 3, 4, 5, 6].map((n) => {
      Deno.writeTextFileSync(`${dir}/f${n}`, "");
      return openFd(`${dir}/f${n}`);
    });
    try {
      const results = await Promise.all(files.map((f, n) =>
        Promise.all([
          oob.execute("add-fd", { "fdset-id": 11 + n }, { fds: [f] }),
          oob.execute("query-status"),
        ])
      ));
      for (const [n, [added]] of results.entries()) {
        assert.equal(added["fdset-id"], 11 + n);
        // Deno reads /proc only with --allow-all: ask readlink(1).
        const link = await run("readlink", [`/proc/${vm.pid}/fd/${added.fd}`]);
        assert.equal(link.out.trim(), `${dir}/f${n + 1}`);
      }
    } finally {
      for (const f of files) f.close();
    }
    const sets = await oob.execute("query-fdsets");
    assert.deepEqual(sets.map((s) => [s["fdset-id"], s.fds.length]).sort(), [
      [11, 1],
      [12, 1],
      [13, 1],
      [14, 1],
      [15, 1],
      [16, 1],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fd passing: clear errors, nothing sent: TCP, a plain unix client, a closed descriptor, too many", async () => {
  await using server = await listen("tcp:127.0.0.1:0");
  await assert.rejects(connect(server.qemuArg, { fdPassing: true }), (e: unknown) => {
    assert.ok(e instanceof FdPassingError);
    assert.match(e.message, /needs a unix socket.*TCP, which cannot carry file descriptors/);
    return true;
  });

  await using vm = await launch({ timeout: "20s" });
  using devnull = openFd("/dev/null");
  // vm.qmp is a plain Deno socket (QEMU dialed in): no descriptors on it.
  await assert.rejects(
    vm.qmp.execute("getfd", { fdname: "x" }, { fds: [devnull] }),
    (e: unknown) => {
      assert.ok(e instanceof FdPassingError);
      assert.match(e.message, /connect\("unix:\/path", \{ fdPassing: true \}\).*--allow-ffi/);
      return true;
    },
  );
  await using qmp = await connect(vm.socketPath, { fdPassing: true, timeout: "5s" });
  const closed = openFd("/dev/null");
  closed.close();
  await assert.rejects(qmp.execute("getfd", { fdname: "x" }, { fds: [closed] }), FdPassingError);
  await assert.rejects(
    qmp.execute("getfd", { fdname: "x" }, { fds: Array(17).fill(devnull) }),
    /at most 16/,
  );
  await assert.rejects(qmp.execute("getfd", { fdname: "x" }, { fds: [-1] }), FdPassingError);
  // Nothing reached QEMU: the connection is still in step.
  assert.equal((await qmp.execute("query-status")).status, "running");
  await assert.rejects(qmp.execute("closefd", { fdname: "x" }), /not found/);
});

Deno.test("fd passing: without --allow-ffi the error names the flag", async () => {
  const dir = await tempDir();
  try {
    const script = `${dir}/noffi.ts`;
    const lib = new URL("../lib/", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { connect } from "${lib}client.ts";\n` +
        `try { await connect("unix:${dir}/none.sock", { fdPassing: true }); }\n` +
        `catch (e) { console.log(e.name + ": " + e.message); }\n`,
    );
    const r = await run(Deno.execPath(), [
      "run",
      "--no-check",
      "--allow-read",
      "--allow-write",
      script,
    ]);
    assert.match(r.out, /^FdPassingError: .*run Deno with --allow-ffi/m, r.out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fd passing transport: close() ends a pending read at once; QEMU's exit is seen; no leaks", async () => {
  const dir = await tempDir();
  try {
    // A silent peer: the read stays pending (a poll() on the blocking pool) until close().
    using listener = Deno.listen({ transport: "unix", path: `${dir}/quiet.sock` });
    const t = await openUnixFdTransport({ transport: "unix", path: `${dir}/quiet.sock` }, {
      deadline: Date.now() + 5000,
      timeoutMs: 5000,
    });
    using peer = await listener.accept();
    const reading = t.read(new Uint8Array(16));
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    t.close();
    assert.equal(await within(reading, 2000, "read after close"), null);
    assert.ok(performance.now() - t0 < 1000);
    await assert.rejects(t.write(new Uint8Array([1])), Deno.errors.BadResource);
    // Bytes both ways on a fresh one.
    const u = await openUnixFdTransport({ transport: "unix", path: `${dir}/quiet.sock` }, {
      deadline: Date.now() + 5000,
      timeoutMs: 5000,
    });
    using p2 = await listener.accept();
    assert.equal(await u.write(new TextEncoder().encode("ping")), 4);
    const got = new Uint8Array(8);
    assert.equal(new TextDecoder().decode(got.subarray(0, (await p2.read(got))!)), "ping");
    await p2.write(new TextEncoder().encode("pong"));
    const buf = new Uint8Array(8);
    const n = await within(u.read(buf), 2000, "read");
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "pong");
    p2.close();
    assert.equal(await within(u.read(buf), 2000, "EOF"), null, "peer close is EOF");
    u.close();
    void peer;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  // A real QEMU killed under an fd-passing client: the client closes with reason "peer".
  const vm = await launch({ timeout: "20s" });
  const qmp = await connect(vm.socketPath, { fdPassing: true, timeout: "5s" });
  await vm.kill();
  await within(qmp.closed, 5000, "client closed after QEMU died");
  assert.equal(qmp.closeError?.reason, "peer");
  await qmp.close();
});

Deno.test("fd passing: a missing socket is a ConnectionError; retry waits for it until the timeout", async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(
      connect(`unix:${dir}/absent.sock`, { fdPassing: true }),
      (e: unknown) =>
        e instanceof Error && e.name === "ConnectionError" && /No such file/.test(e.message),
    );
    const t0 = performance.now();
    await assert.rejects(
      connect(`unix:${dir}/absent.sock`, { fdPassing: true, retry: true, timeout: 300 }),
      (e: unknown) => e instanceof Error && e.name === "TimeoutError",
    );
    assert.ok(performance.now() - t0 < 2000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fd passing: a command larger than the socket buffer (partial writes, POLLOUT waits) keeps its fd", async () => {
  await using vm = await launch({ timeout: "20s" });
  await using qmp = await connect(vm.socketPath, { fdPassing: true, timeout: "5s" });
  using devnull = openFd("/dev/null");
  // ~400 KB: sendmsg writes part of it (the fd goes with the first part), then EAGAIN, poll, rest.
  const opaque = "x".repeat(400_000);
  const added = await within(
    qmp.execute("add-fd", { "fdset-id": 7, opaque }, { fds: [devnull] }),
    20_000,
    "big add-fd",
  );
  assert.equal(added["fdset-id"], 7);
  const [set] = await qmp.execute("query-fdsets");
  assert.equal(set.fds[0].opaque?.length, 400_000);
  assert.equal((await qmp.execute("query-status")).status, "running");
});
