/** Accept mode against real QEMU: listen(), QEMU dials in, accept() yields a negotiated client. */
import assert from "node:assert/strict";
import { listen } from "../lib/server.ts";
import { AbortError, AddressError, ConnectionError, TimeoutError } from "../lib/errors.ts";
import { within } from "./helpers/qemu.ts";

/** Spawns QEMU (`-machine none`) with the given monitor arguments; killed by dispose. */
function spawnQemu(monitorArgs: string[]) {
  const child = new Deno.Command("qemu-system-x86_64", {
    args: ["-nodefaults", "-display", "none", "-machine", "none", ...monitorArgs],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return {
    child,
    stderr,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await stderr;
    },
  };
}

async function tempDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-server-" });
  await Deno.chmod(dir, 0o700);
  return dir;
}

Deno.test("server: unix, QEMU dials in with -qmp unix:PATH; two QEMUs over time; close removes the socket", async () => {
  const dir = await tempDir();
  try {
    const server = await listen(`unix:${dir}/in.sock`);
    assert.equal(server.path, `${dir}/in.sock`);
    assert.equal(server.qemuArg, `unix:${dir}/in.sock`);
    for (let i = 0; i < 2; i++) {
      await using qemu = spawnQemu(["-qmp", server.qemuArg, "-name", `dialer${i}`]);
      await using qmp = await within(server.accept({ timeout: "15s" }), 20_000, "accept");
      assert.equal(qmp.negotiated, true);
      assert.match(qmp.address, /\(accepted\)$/);
      const { name } = await qmp.execute("query-name");
      assert.equal(name, `dialer${i}`, "each accept is the QEMU that dialed in");
      await qmp.execute("quit");
      assert.equal((await within(qemu.child.status, 10_000, "QEMU exit")).code, 0);
    }
    await server.close();
    assert.equal(server.closed, true);
    await assert.rejects(Deno.stat(`${dir}/in.sock`), Deno.errors.NotFound);
    await assert.rejects(server.accept(), ConnectionError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: -chardev socket,server=off + -mon mode=control dials in too", async () => {
  const dir = await tempDir();
  try {
    await using server = await listen(`${dir}/mon.sock`);
    await using _qemu = spawnQemu([
      "-chardev",
      `socket,id=mon0,path=${server.path},server=off`,
      "-mon",
      "chardev=mon0,mode=control",
    ]);
    await using qmp = await within(server.accept({ timeout: "15s" }), 20_000, "accept");
    assert.equal((await qmp.execute("query-status")).status, "running");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: TCP on 127.0.0.1 port 0; two QEMUs connected at once are two clients", async () => {
  await using server = await listen("tcp:127.0.0.1:0");
  assert.equal(server.address.transport, "tcp");
  assert.ok(server.address.transport === "tcp" && server.address.port > 0);
  assert.equal(server.path, undefined);
  await using _a = spawnQemu(["-qmp", server.qemuArg, "-name", "a"]);
  await using _b = spawnQemu(["-qmp", server.qemuArg, "-name", "b"]);
  await using one = await within(server.accept({ timeout: "15s" }), 20_000, "accept 1");
  await using two = await within(server.accept({ timeout: "15s" }), 20_000, "accept 2");
  const names = [
    (await one.execute("query-name")).name,
    (await two.execute("query-name")).name,
  ].sort();
  assert.deepEqual(names, ["a", "b"]);
});

Deno.test("server: accept times out, aborts, and a later accept still gets the next QEMU", async () => {
  const dir = await tempDir();
  try {
    await using server = await listen(`unix:${dir}/t.sock`);
    await assert.rejects(server.accept({ timeout: 50 }), (e: unknown) => {
      assert.ok(e instanceof TimeoutError);
      assert.match(e.message, /-qmp unix:.*t\.sock/, "the hint says how to start QEMU");
      return true;
    });
    const ac = new AbortController();
    const waiting = server.accept({ signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(waiting, AbortError);
    await using _qemu = spawnQemu(["-qmp", server.qemuArg]);
    await using qmp = await within(server.accept({ timeout: "15s" }), 20_000, "accept");
    assert.equal(qmp.negotiated, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: close() ends a pending accept at once", async () => {
  const dir = await tempDir();
  try {
    const server = await listen(`unix:${dir}/c.sock`);
    const waiting = server.accept();
    waiting.catch(() => {}); // asserted below
    await server.close();
    await assert.rejects(within(waiting, 2000, "accept after close"), ConnectionError);
    await assert.rejects(Deno.stat(`${dir}/c.sock`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: bad addresses are refused before binding", async () => {
  await assert.rejects(listen("tcp:0.0.0.0:0"), (e: unknown) => {
    assert.ok(e instanceof AddressError);
    assert.match(e.message, /loopback/);
    return true;
  });
  // Remote and libvirt addresses are "not exposed", but nothing can listen on them.
  for (const remote of ["ssh://host/run/q.sock", "tls://127.0.0.1:4444", "libvirt:vm1"]) {
    await assert.rejects(listen(remote), (e: unknown) => {
      assert.ok(e instanceof AddressError, `${remote}: ${e}`);
      assert.match(e.message, /unix socket or a loopback TCP address/);
      return true;
    });
  }
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/taken`, "");
    await assert.rejects(listen(`unix:${dir}/taken`), (e: unknown) => {
      assert.ok(e instanceof ConnectionError);
      assert.match(e.message, /already exists/);
      return true;
    });
    assert.equal(await Deno.readTextFile(`${dir}/taken`), "", "the existing file is untouched");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: a peer that is not QMP fails that accept() only; the next QEMU is accepted", async () => {
  const dir = await tempDir();
  try {
    await using server = await listen(`unix:${dir}/p.sock`);
    const waiting = server.accept({ timeout: "5s" });
    waiting.catch(() => {}); // asserted below
    const intruder = await Deno.connect({ transport: "unix", path: server.path! });
    await intruder.write(new TextEncoder().encode("SSH-2.0-not-qmp\r\n"));
    await assert.rejects(within(waiting, 8000, "accept of a non-QMP peer"), (e: unknown) => {
      assert.ok(
        e instanceof Error && /greeting|Protocol|JSON/i.test(`${e.name} ${e.message}`),
        String(e),
      );
      return true;
    });
    intruder.close();
    await using _qemu = spawnQemu(["-qmp", server.qemuArg]);
    await using qmp = await within(server.accept({ timeout: "15s" }), 20_000, "accept");
    assert.equal(qmp.negotiated, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
