/**
 * Guest agent helpers against the REAL qemu-ga, run on the host on a private unix socket
 * (tests/helpers/host_agent.ts blocks every command that would act on the host: shutdown,
 * suspend, fsfreeze, time, users, ...; those are tested against the fake agent).
 */
import assert from "node:assert/strict";
import { connectAgent } from "../lib/agent/client.ts";
import { AgentCommandError, AgentExecTimeoutError } from "../lib/agent/errors.ts";
import { ConnectionClosedError } from "../lib/errors.ts";
import { hostAgentAvailable, startHostAgent } from "./helpers/host_agent.ts";

const ignore = !hostAgentAvailable();
const encoder = new TextEncoder();

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stderr: "inherit" }).output();
  assert.ok(out.success, `${cmd} failed`);
  return new TextDecoder().decode(out.stdout).trim();
}

async function rawExchange(path: string, data: string, readMs: number): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(encoder.encode(data));
  const timer = setTimeout(() => conn.close(), readMs);
  let out = "";
  const buf = new Uint8Array(65536);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
  } catch {
    // closed by the timer
  }
  clearTimeout(timer);
  try {
    conn.close();
  } catch {
    // already closed
  }
  return out;
}

Deno.test({
  name: "agent/host: guest-info, osInfo and networkInterfaces from the real qemu-ga",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    const info = await agent.info();
    assert.match(info.version, /^\d+\.\d+/);
    const exec = info.supported_commands.find((c) => c.name === "guest-exec");
    assert.equal(exec?.enabled, true);
    const os = await agent.osInfo();
    assert.equal(os["kernel-release"], await run("/bin/uname", ["-r"]));
    const nics = await agent.networkInterfaces();
    const lo = nics.find((n) => n.name === "lo");
    assert.ok(lo, `no lo in ${nics.map((n) => n.name)}`);
    assert.ok(lo["ip-addresses"]?.some((a) => a["ip-address"] === "127.0.0.1"));
    await agent.ping();
    // Nanoseconds since the epoch: beyond 2^53, so an exact bigint (lib/json.ts), never rounded.
    const now = await agent.execute("guest-get-time");
    assert.equal(typeof now, "bigint");
    assert.ok(Math.abs(Number(now) / 1e6 - Date.now()) < 60_000, `guest-get-time ${now}`);
  },
});

Deno.test({
  name: "agent/host: exec returns exit code, stdout, stderr; passes stdin and env",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    const echo = await agent.exec("/bin/echo", ["hello", "world"]);
    assert.deepEqual(
      { exitCode: echo.exitCode, stdout: echo.stdout, stderr: echo.stderr },
      { exitCode: 0, stdout: "hello world\n", stderr: "" },
    );
    const r = await agent.exec("/bin/sh", ["-c", 'cat; echo "$GREETING" >&2; exit 7'], {
      input: "from stdin",
      env: { GREETING: "hi there", PATH: "/usr/bin:/bin" },
    });
    assert.equal(r.exitCode, 7);
    assert.equal(r.stdout, "from stdin");
    assert.equal(r.stderr, "hi there\n");
    assert.equal(r.stdoutTruncated, false);
    const bin = await agent.exec("/usr/bin/printf", ["\\377\\000\\001"]);
    assert.deepEqual([...bin.stdoutBytes], [0xff, 0, 1]);
    // A program that does not exist is the agent's error, typed.
    const err = await agent.exec("/nonexistent/program").catch((e) => e);
    assert.ok(err instanceof AgentCommandError, String(err));
    assert.equal(err.command, "guest-exec");
  },
});

Deno.test({
  name: "agent/host: a command printing 100 MB is bounded and reported truncated",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    const big = await agent.exec("/bin/sh", ["-c", "head -c 100000000 /dev/zero; echo done >&2"], {
      timeout: "60s",
    });
    assert.equal(big.exitCode, 0);
    assert.equal(big.stdoutTruncated, true, "qemu-ga's own 16 MiB cap is reported");
    assert.equal(big.stdoutBytes.length, 16 * 1024 * 1024);
    assert.equal(big.stderr, "done\n");
    const small = await agent.exec("/bin/sh", ["-c", "head -c 3000000 /dev/zero"], {
      maxOutput: 1_000_000,
    });
    assert.equal(small.stdoutBytes.length, 1_000_000, "the client's maxOutput bound");
    assert.equal(small.stdoutTruncated, true);
  },
});

Deno.test({
  name: "agent/host: an exec that does not exit times out; the process is left running",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    const t0 = Date.now();
    const err = await agent.exec("/bin/sleep", ["30"], { timeout: 500 }).catch((e) => e);
    assert.ok(err instanceof AgentExecTimeoutError, String(err));
    assert.ok(Date.now() - t0 < 3000);
    assert.match(err.message, /left running in the guest/);
    // Still running: the agent says so; then we stop it ourselves.
    const status = await agent.execute("guest-exec-status", { pid: err.pid });
    assert.equal(status.exited, false);
    const kill = await agent.exec("/bin/kill", [String(err.pid)]);
    assert.equal(kill.exitCode, 0);
    for (let i = 0; i < 100; i++) {
      const s = await agent.execute("guest-exec-status", { pid: err.pid });
      if (s.exited) {
        assert.equal(s.signal, 15);
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail("the sleep did not exit after kill");
  },
});

Deno.test({
  name: "agent/host: readFile/writeFile round-trip in chunks; handles are always closed",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    const fds = async () => (await run("/bin/ls", [`/proc/${host.pid}/fd`])).split("\n").length;
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(2.5 * 1024 * 1024);
    for (let i = 0; i < big.length; i += data.length) big.set(data, i);
    const path = `${host.dir}/data.bin`;
    const before = await fds();
    await agent.writeFile(path, big);
    assert.deepEqual(await Deno.readFile(path), big);
    assert.deepEqual(await agent.readFile(path), big);
    await agent.writeFile(`${host.dir}/t.txt`, "one\n");
    await agent.writeFile(`${host.dir}/t.txt`, "two\n", { append: true });
    assert.equal(await agent.readTextFile(`${host.dir}/t.txt`), "one\ntwo\n");
    await agent.writeFile(`${host.dir}/empty`, "");
    assert.equal((await agent.readFile(`${host.dir}/empty`)).length, 0);
    const err = await agent.readFile(`${host.dir}/missing`).catch((e) => e);
    assert.ok(err instanceof AgentCommandError, String(err));
    assert.equal(err.class, "GenericError");
    assert.match(err.desc, /No such file or directory/);
    const tooBig = await agent.readFile(path, { maxSize: 1024 * 1024 }).catch((e) => e);
    assert.match(String(tooBig), /larger than maxSize/);
    assert.equal(await fds(), before, "every guest file handle was closed");
  },
});

Deno.test({
  name: "agent/host: leftovers of an earlier client (half a request, an unread reply) are flushed",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    // The fault is real: half a request poisons the next client that does not resync...
    await rawExchange(host.path, '{"execute": "guest-info", "argu', 100);
    const poisoned = await rawExchange(host.path, '{"execute": "guest-ping"}\n', 500);
    assert.match(poisoned, /JSON parse error/);
    // ...so leave more leftovers, then connect properly.
    await rawExchange(host.path, '{"execute": "guest-get-osinfo"}\n{"execute": "guest-in', 0);
    await using agent = await connectAgent(host.address);
    assert.deepEqual(await agent.execute("guest-ping"), {});
    const info = await agent.info();
    assert.ok(Array.isArray(info.supported_commands));
  },
});

Deno.test({
  name: "agent/host: qemu-ga killed mid-session is a ConnectionClosedError, not a hang",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    await using agent = await connectAgent(host.address);
    await agent.ping();
    await host.kill();
    const err = await agent.ping().catch((e) => e);
    assert.ok(err instanceof ConnectionClosedError, String(err));
  },
});
