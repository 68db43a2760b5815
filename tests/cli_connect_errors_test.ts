/**
 * Connection failures name their real cause, in the library and through the
 * real CLI (`deno run scripts/qmp.ts exec ...` as a subprocess):
 * - a monitor with a client attached is "busy", every time (real QEMU: the
 *   first connects wait in its queue, later ones get EAGAIN);
 * - a path that is a regular file or a directory is "not a socket";
 * - a TCP connection that is never accepted (a LOCAL listener with backlog 1
 *   whose queue is full: Linux drops the SYNs) "timed out", and the greeting
 *   is not blamed.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { ConnectionError, MonitorBusyError, QmpError, TimeoutError } from "../lib/errors.ts";
import { startQemuForClients } from "./helpers/qemu.ts";
import { qmp, type Run, show } from "./helpers/cli.ts";

Deno.test("busy monitor: every qmp exec says so while another client is attached (real QEMU)", async () => {
  await using qemu = await startQemuForClients({ machine: "none" });
  await using attached = await connect(qemu.address, { timeout: "10s" });
  assert.equal((await attached.execute("query-status")).status, "running");
  const runs: Run[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await qmp(["exec", qemu.address, "query-status", "--connect-timeout", "1s"]);
    runs.push(r);
    assert.equal(r.code, 1, show(r));
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^qmp exec: error: .*monitor .*is busy.*another client is connected/);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Resource temporarily unavailable|Check that QEMU is running/);
  }
  // The first connects waited in QEMU's queue; now it is full and a connect fails at once.
  assert.ok(runs.slice(2).every((r) => /connection queue is full/.test(r.stderr)), "EAGAIN seen");
  const t0 = Date.now();
  await assert.rejects(connect(qemu.address, { timeout: "5s" }), (e: unknown) => {
    assert.ok(e instanceof MonitorBusyError, String(e));
    assert.ok(e instanceof ConnectionError && e instanceof QmpError);
    assert.equal(e.address, qemu.address);
    return true;
  });
  assert.ok(Date.now() - t0 < 2000, "a full queue fails at once, without waiting for the timeout");
  // The attached client is unaffected.
  assert.equal((await attached.execute("query-status")).status, "running");
});

Deno.test("not a socket: a regular file or a directory says what it is", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-notsock-" });
  try {
    const file = `${dir}/passwd`;
    await Deno.writeTextFile(file, "root:x:0:0::/root:/bin/sh\n");
    for (const [path, what] of [[file, "a regular file"], [dir, "a directory"]]) {
      const r = await qmp(["exec", path, "query-status"]);
      assert.equal(r.code, 1, show(r));
      assert.equal(
        r.stderr.trim(),
        `qmp exec: error: Cannot connect to unix:${path}: ${path} is ${what}, not a socket. ` +
          `Give the path of QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off).`,
      );
      // With retry too: a file will not become a socket by waiting.
      const t0 = Date.now();
      await assert.rejects(
        connect(`unix:${path}`, { retry: true, timeout: "5s" }),
        (e: unknown) => {
          assert.ok(e instanceof ConnectionError, String(e));
          assert.match(e.message, new RegExp(`is ${what}, not a socket`));
          assert.doesNotMatch(e.message, /refused|Nothing is listening/);
          return true;
        },
      );
      assert.ok(Date.now() - t0 < 2000, "reported at once");
    }
    // /etc/passwd itself, as in the report.
    const r = await qmp(["exec", "/etc/passwd", "query-status"]);
    assert.match(r.stderr, /\/etc\/passwd is a regular file, not a socket/, show(r));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A TCP listener on 127.0.0.1 with backlog 1 that never accepts (python3),
 * and connections filling its accept queue until a connect hangs.
 */
async function fullTcpListener(): Promise<
  { port: number; acceptOne(): Promise<void> } & AsyncDisposable
> {
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      "import socket, sys\n" +
      "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n" +
      "print(s.getsockname()[1], flush=True)\n" +
      "kept = []\n" +
      "for line in sys.stdin:  # accepts only when told to; exits when stdin closes\n" +
      "    kept.append(s.accept()[0])\n",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const fillers: Deno.Conn[] = [];
  const stdin = child.stdin.getWriter();
  const acceptOne = () => stdin.write(new TextEncoder().encode("accept\n"));
  const dispose = async () => {
    for (const c of fillers) c.close();
    await stdin.close().catch(() => {});
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await child.status;
    clearTimeout(timer);
    await child.stdout.cancel().catch(() => {});
  };
  try {
    const reader = child.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("python3 listener exited early");
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const port = Number(text.trim());
    for (let i = 0; i < 10; i++) {
      try {
        fillers.push(
          await Deno.connect({ hostname: "127.0.0.1", port, signal: AbortSignal.timeout(300) }),
        );
      } catch {
        return { port, acceptOne, [Symbol.asyncDispose]: dispose }; // this one hung: queue full
      }
    }
    throw new Error("the listener's queue never filled up");
  } catch (err) {
    await dispose();
    throw err;
  }
}

Deno.test("a TCP connection nobody accepts says the connection timed out, not the greeting", async () => {
  await using listener = await fullTcpListener();
  const address = `127.0.0.1:${listener.port}`;

  const t0 = Date.now();
  await assert.rejects(connect(address, { timeout: 700 }), (e: unknown) => {
    assert.ok(e instanceof TimeoutError, String(e));
    assert.equal(e.timeoutMs, 700);
    assert.match(e.message, /^Connecting to tcp:127\.0\.0\.1:\d+ did not complete within 700ms/);
    assert.match(e.message, /the connection timed out: nothing accepted the TCP connection/);
    assert.doesNotMatch(e.message, /greeting/);
    return true;
  });
  const took = Date.now() - t0;
  assert.ok(took >= 650 && took < 2500, `took ${took} ms`);

  const r = await qmp(["exec", address, "query-status", "--connect-timeout", "1s"]);
  assert.equal(r.code, 1, show(r));
  assert.match(
    r.stderr,
    /^qmp exec: error: Connecting to tcp:.* within 1s; the connection timed out/,
  );
  assert.doesNotMatch(r.stderr, /greeting/);
});

Deno.test("a TCP connection accepted too late to greet blames the connection, not the greeting", async () => {
  await using listener = await fullTcpListener();
  // Free one slot of the queue shortly: the kernel's SYN retry (after ~1 s) then gets through,
  // leaving the greeting almost no time.
  const timer = setTimeout(() => void listener.acceptOne(), 300);
  try {
    await assert.rejects(connect(`127.0.0.1:${listener.port}`, { timeout: 1300 }), (e: unknown) => {
      assert.ok(e instanceof TimeoutError, String(e));
      assert.match(e.message, /^Connecting to tcp:127\.0\.0\.1:\d+ did not complete within 1300ms/);
      assert.match(
        e.message,
        /the connection timed out: it took [\d.]+m?s to be accepted, leaving/,
      );
      assert.doesNotMatch(e.message, /monitor is busy \(another client|not a QMP socket/);
      return true;
    });
  } finally {
    clearTimeout(timer);
  }
});
