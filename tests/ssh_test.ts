/**
 * QMP over SSH against a real local sshd (tests/helpers/sshd.ts, 127.0.0.1
 * only) and a real QEMU behind it, or the fake server for faults QEMU does
 * not produce. Every error case checks the error's type, kind and wording.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import {
  AbortError,
  ConnectionClosedError,
  ProtocolError,
  SshError,
  TimeoutError,
} from "../lib/errors.ts";
import { startFakeServer } from "./helpers/fake_server.ts";
import { freePort, startQemuForClients, within } from "./helpers/qemu.ts";
import { processesWith, type ProcessInfo, type Sshd, startSshd } from "./helpers/sshd.ts";

const T = { sanitizeOps: true, sanitizeResources: true };

/** ssh client processes of this sshd's tests (their -F config lives in its temp dir). */
async function sshProcesses(sshd: Sshd): Promise<ProcessInfo[]> {
  return (await processesWith(`-F ${sshd.dir}/`)).filter((p) => !p.args.startsWith("sshd"));
}

/** The local tunnel dirs of ssh processes (from their -L argument). */
function tunnelDirs(procs: ProcessInfo[]): string[] {
  return procs.flatMap((p) => {
    const m = / -L (\S+)\/qmp\.sock:/.exec(p.args);
    return m ? [m[1]] : [];
  });
}

/** Polls `check` until it finds nothing or `ms` pass; returns what is left. */
async function waitGone<T>(check: () => Promise<T[]>, ms: number): Promise<T[]> {
  const until = Date.now() + ms;
  let left = await check();
  while (left.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    left = await check();
  }
  return left;
}

async function expectSshError(
  promise: Promise<unknown>,
  failure: string,
  message: RegExp,
): Promise<SshError> {
  const err = await promise.then(
    () => assert.fail("connect() should have failed"),
    (e) => e,
  );
  assert.ok(err instanceof SshError, `expected SshError, got ${err?.name}: ${err?.message}`);
  assert.equal(err.failure, failure, err.message);
  assert.match(err.message, message);
  assert.doesNotMatch(err.message, /\n/, "one line");
  assert.doesNotMatch(err.message, /PRIVATE KEY/);
  return err;
}

Deno.test({
  name: "ssh: commands, events, 200 in flight through a real sshd; close ends ssh",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const url = sshd.url(qemu.socketPath);
    const qmp = await within(
      connect(url, { ssh: { configFile: sshd.configFile }, timeout: "10s" }),
      15_000,
      "connect",
    );
    try {
      assert.equal(qmp.address, url);
      assert.equal(qmp.greeting.version.qemu.major, 7);
      assert.equal((await qmp.execute("query-status")).status, "running");
      const stopped = qmp.waitEvent("STOP", { timeout: "5s" });
      await qmp.execute("stop");
      assert.equal((await stopped).event, "STOP");
      const replies = await within(
        Promise.all(Array.from({ length: 200 }, () => qmp.execute("query-status"))),
        20_000,
        "200 in flight",
      );
      assert.equal(replies.length, 200);
      assert.ok(replies.every((r) => r.status === "paused"));
      // A large reply comes through whole.
      const schema = await qmp.executeRaw("query-qmp-schema") as unknown[];
      assert.ok(schema.length > 500);
      assert.equal((await sshProcesses(sshd)).length, 1, "one ssh process per connection");
    } finally {
      const procs = await sshProcesses(sshd);
      const dirs = tunnelDirs(procs);
      assert.equal(dirs.length, 1, JSON.stringify(procs));
      await qmp.close();
      assert.deepEqual(await sshProcesses(sshd), [], "ssh ended by close()");
      for (const d of dirs) {
        await assert.rejects(Deno.stat(d), Deno.errors.NotFound, `tunnel dir ${d} removed`);
      }
    }
  },
});

Deno.test({
  name: "ssh: each failure is a specific SshError naming what to do",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    const ssh = { configFile: sshd.configFile };
    const opts = { ssh, timeout: "10s" };

    // Nothing listens on the port.
    const port = freePort();
    await expectSshError(
      connect(`ssh://${sshd.user}@127.0.0.1:${port}/x.sock`, opts),
      "unreachable",
      new RegExp(
        `Cannot reach ${sshd.user}@127\\.0\\.0\\.1:${port} with ssh: .*Connection refused`,
      ),
    );

    // A key the server does not authorize.
    const other = await sshd.newKey("other_key");
    await expectSshError(
      connect(sshd.url("/x.sock"), {
        ...opts,
        ssh: { configFile: await sshd.clientConfig({ identityFile: other }) },
      }),
      "auth",
      /ssh authentication to .* was refused \(Permission denied \(publickey\)\.?\)\. .*BatchMode=yes/,
    );

    // The server's key is not in known_hosts: never answer the prompt.
    const empty = `${sshd.dir}/known_hosts_empty`;
    await Deno.writeTextFile(empty, "");
    const unknownHost = await sshd.clientConfig({ knownHosts: empty });
    await expectSshError(
      connect(sshd.url("/x.sock"), { ...opts, ssh: { configFile: unknownHost } }),
      "host-key",
      /does not know the host key of .*never answers ssh's prompt.*StrictHostKeyChecking=accept-new/,
    );

    // A different key is recorded for the host.
    const impostor = await sshd.newKey("impostor_key");
    const changed = `${sshd.dir}/known_hosts_changed`;
    const pub = (await Deno.readTextFile(`${impostor}.pub`)).split(" ").slice(0, 2).join(" ");
    await Deno.writeTextFile(changed, `[127.0.0.1]:${sshd.port} ${pub}\n`);
    await expectSshError(
      connect(sshd.url("/x.sock"), {
        ...opts,
        ssh: { configFile: await sshd.clientConfig({ knownHosts: changed }) },
      }),
      "host-key",
      /host key of .* has CHANGED .*ssh-keygen .*-R/,
    );

    // No socket at the remote path, and a regular file there.
    await expectSshError(
      connect(sshd.url("/nonexistent/qmp.sock"), opts),
      "remote-socket",
      /^ssh reached .*, but the remote socket \/nonexistent\/qmp\.sock does not exist \(sshd: connect failed: open failed\): is QEMU running there with -qmp unix:\/nonexistent\/qmp\.sock,server=on,wait=off\?$/,
    );
    await expectSshError(
      connect(sshd.url(sshd.knownHosts), opts),
      "remote-socket",
      /, but \/.*\/known_hosts is a regular file, not a socket \(sshd: .*\): give the path of QEMU's QMP socket/,
    );
    await expectSshError(
      connect(sshd.url(sshd.dir), opts),
      "remote-socket",
      /is a directory, not a socket/,
    );
    // A socket file nothing listens on (QEMU gone, file left behind).
    const stale = `${sshd.dir}/stale.sock`;
    const bound = await new Deno.Command("python3", {
      args: ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", stale],
    }).output();
    assert.ok(bound.success && (await Deno.lstat(stale)).isSocket, "a socket file, unbound");
    await expectSshError(
      connect(sshd.url(stale), opts),
      "remote-socket",
      /but sshd could not connect to the socket .*stale\.sock .*check that QEMU still listens on it/,
    );

    // Without an SFTP subsystem to ask, the message lists every possible cause.
    {
      await using bare = await startSshd({ sftp: false });
      await expectSshError(
        connect(bare.url("/nonexistent/qmp.sock"), { ssh: { configFile: bare.configFile } }),
        "remote-socket",
        /^ssh reached .* but could not open the remote socket \/nonexistent\/qmp\.sock \(sshd: connect failed: open failed\): check that QEMU runs there with -qmp unix:\/nonexistent\/qmp\.sock,server=on,wait=off, that the ssh user may open it, and that sshd allows forwarding to it/,
      );
    }

    // No ssh program.
    await expectSshError(
      connect(sshd.url("/x.sock"), { ...opts, ssh: { ...ssh, binary: "/nonexistent/ssh" } }),
      "ssh-missing",
      /the ssh program "\/nonexistent\/ssh" (was not found|could not be run).*openssh-client/,
    );

    // A config file that does not exist.
    await expectSshError(
      connect(sshd.url("/x.sock"), { ...opts, ssh: { configFile: `${sshd.dir}/nope` } }),
      "config",
      /ssh refused its configuration or options .*nope/,
    );

    // Options that would detach ssh or hide its errors are refused before anything runs.
    for (const bad of [["-f"], ["-q"], ["-oBatchMode=no", "host"], ["-o"]]) {
      await expectSshError(
        connect(sshd.url("/x.sock"), { ...opts, ssh: { ...ssh, options: bad } }),
        "config",
        /Cannot use these ssh options/,
      );
    }
    assert.deepEqual(await waitGone(() => sshProcesses(sshd), 2000), [], "no ssh left behind");
  },
});

Deno.test({
  name: "ssh: an unknown host key is accepted only when the user says so (accept-new)",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const fresh = `${sshd.dir}/known_hosts_fresh`;
    await Deno.writeTextFile(fresh, "");
    const qmp = await connect(sshd.url(qemu.socketPath), {
      timeout: "10s",
      ssh: {
        configFile: await sshd.clientConfig({ knownHosts: fresh }),
        options: ["-o", "StrictHostKeyChecking=accept-new"],
      },
    });
    await qmp.close();
    assert.match(await Deno.readTextFile(fresh), /^\[127\.0\.0\.1\]:\d+ ssh-ed25519 /);
  },
});

Deno.test({
  name: "ssh: a remote socket that is not QMP, silent, or closes mid-greeting",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    const ssh = { configFile: sshd.configFile };

    await using garbage = await startFakeServer(async (c) => {
      await c.write("SSH-2.0-OpenSSH_9.2 not a monitor\r\n");
      await c.eof;
    });
    await assert.rejects(
      connect(sshd.url(garbage.path), { ssh, timeout: "5s" }),
      (e: unknown) => {
        assert.ok(e instanceof ProtocolError, String(e));
        return true;
      },
    );

    await using silent = await startFakeServer(async (c) => {
      await c.eof;
    });
    const t0 = Date.now();
    await assert.rejects(
      connect(sshd.url(silent.path), { ssh, timeout: "1500ms" }),
      (e: unknown) => {
        assert.ok(e instanceof TimeoutError, String(e));
        assert.match(e.message, /did not complete within 1500ms; .*sent nothing/);
        return true;
      },
    );
    assert.ok(Date.now() - t0 < 4000, "bounded by the connect timeout");

    await using half = await startFakeServer(async (c) => {
      await c.write('{"QMP": {"version": {"qemu": ');
      c.close();
    });
    await assert.rejects(
      connect(sshd.url(half.path), { ssh, timeout: "5s" }),
      (e: unknown) => {
        assert.ok(e instanceof ConnectionClosedError || e instanceof ProtocolError, String(e));
        assert.match((e as Error).message, /No QMP greeting|middle of a message/);
        return true;
      },
    );
    assert.deepEqual(await waitGone(() => sshProcesses(sshd), 2000), []);
  },
});

Deno.test({
  name: "ssh: a host that hangs (DNS, ProxyCommand) is bounded by the connect timeout",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    // A name lookup that never ends, simulated without touching the network.
    const marker = `sleep 29.${Deno.pid}`;
    const config = await sshd.clientConfig({
      extra: ["Host hang.invalid", `  ProxyCommand ${marker}`],
    });
    const t0 = Date.now();
    const err = await within(
      connect("ssh://hang.invalid/run/vm1/qmp.sock", { ssh: { configFile: config }, timeout: "2s" })
        .then(() => undefined, (e) => e),
      8000,
      "connect to a hanging host",
    );
    const took = Date.now() - t0;
    assert.ok(took < 4000, `took ${took} ms`);
    assert.ok(
      err instanceof TimeoutError || (err instanceof SshError && err.failure === "unreachable"),
      String(err),
    );
    assert.match(err.message, /within 2s|timed out/);
    assert.deepEqual(await waitGone(() => processesWith(marker), 2000), [], "ProxyCommand gone");
    assert.deepEqual(await waitGone(() => sshProcesses(sshd), 2000), []);

    // Aborting while ssh hangs.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 200);
    await assert.rejects(
      connect("ssh://hang.invalid/run/vm1/qmp.sock", {
        ssh: { configFile: config },
        timeout: "10s",
        signal: abort.signal,
      }),
      AbortError,
    );
    clearTimeout(timer);
    assert.deepEqual(await waitGone(() => processesWith(marker), 2000), []);
    assert.deepEqual(await waitGone(() => sshProcesses(sshd), 2000), []);
  },
});

Deno.test({
  name: "ssh: an ssh that dies mid-session is named as the cause, not QEMU",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const qmp = await connect(sshd.url(qemu.socketPath), {
      ssh: { configFile: sshd.configFile },
      timeout: "10s",
    });
    try {
      await qmp.execute("query-status");
      const [ssh] = await sshProcesses(sshd);
      Deno.kill(ssh.pid, "SIGKILL");
      await within(qmp.closed, 5000, "the client sees the tunnel go");
      const err = qmp.closeError!;
      assert.equal(err.reason, "peer");
      assert.match(
        err.message,
        /^The connection to ssh:\/\/.* was lost: the ssh tunnel to .*127\.0\.0\.1:\d+ ended \(ssh was killed by SIGKILL\)$/,
      );
      assert.ok(err.cause instanceof SshError && err.cause.failure === "exited");
      await assert.rejects(qmp.execute("query-status"), ConnectionClosedError);
    } finally {
      await qmp.close();
    }
  },
});

Deno.test({
  name:
    "ssh: quit over ssh closes as 'quit' and ends ssh; a server that forbids forwarding is named",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const qmp = await connect(sshd.url(qemu.socketPath), {
      ssh: { configFile: sshd.configFile },
      timeout: "10s",
    });
    await qmp.execute("quit");
    await within(qmp.closed, 5000, "closed after quit");
    assert.equal(qmp.closeError?.reason, "quit");
    await qmp.close();
    assert.deepEqual(await sshProcesses(sshd), []);
    assert.equal((await within(qemu.status, 5000, "QEMU exit")).success, true);

    await using strict = await startSshd({ allowStreamLocalForwarding: false });
    await using fake = await startFakeServer(async (c) => {
      await c.handshake();
      await c.eof;
    });
    await expectSshError(
      connect(strict.url(fake.path), { ssh: { configFile: strict.configFile }, timeout: "5s" }),
      "remote-socket",
      /sshd could not connect to the socket .*AllowStreamLocalForwarding/,
    );
    assert.match(strict.log(), /refused streamlocal port forward/);
  },
});

Deno.test({
  name:
    "ssh: retry waits through one ssh for a remote socket that appears later; redials a refusing sshd",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    const path = `${sshd.dir}/later.sock`;
    let listener: Deno.Listener | undefined;
    let served: Promise<void> | undefined;
    const timer = setTimeout(() => {
      listener = Deno.listen({ transport: "unix", path });
      served = (async () => {
        const conn = await listener!.accept();
        await conn.write(new TextEncoder().encode(
          '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, ' +
            '"capabilities": []}}\r\n',
        ));
        const buf = new Uint8Array(1024);
        await conn.read(buf); // qmp_capabilities
        await conn.write(new TextEncoder().encode('{"return": {}, "id": 1}\r\n'));
        await conn.read(buf).catch(() => null);
        conn.close();
      })();
    }, 700);
    try {
      const qmp = await within(
        connect(sshd.url(path), {
          ssh: { configFile: sshd.configFile },
          timeout: "8s",
          retry: true,
        }),
        12_000,
        "connect with retry",
      );
      assert.equal((await sshProcesses(sshd)).length, 1, "one ssh for every attempt");
      await qmp.close();
    } finally {
      clearTimeout(timer);
      listener?.close();
      await served?.catch(() => {});
    }

    // An sshd that refuses connections: with retry, new ssh processes until the deadline.
    const port = freePort();
    const t0 = Date.now();
    await assert.rejects(
      connect(`ssh://${sshd.user}@127.0.0.1:${port}/q.sock`, {
        ssh: { configFile: sshd.configFile },
        timeout: "1500ms",
        retry: true,
      }),
      (e: unknown) => {
        assert.ok(e instanceof TimeoutError, String(e));
        assert.match(
          e.message,
          /within 1500ms; gave up after \d+ attempts \(last: ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused\)/,
        );
        return true;
      },
    );
    assert.ok(Date.now() - t0 < 4000);
    assert.deepEqual(await sshProcesses(sshd), []);
  },
});

Deno.test({
  name: "ssh: reconnect dials again through a new ssh; the old one ends",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using server = await startFakeServer(async (c) => {
      await c.handshake();
      if (server.accepted === 1) {
        c.close(); // the first connection drops
        return;
      }
      const req = await c.recv();
      await c.reply(req, { status: "running", running: true, singlestep: false });
      await c.eof;
    });
    const reconnected = Promise.withResolvers<number>();
    const qmp = await connect(sshd.url(server.path), {
      ssh: { configFile: sshd.configFile },
      timeout: "10s",
      reconnect: {
        initialDelay: 20,
        maxTries: 20,
        onReconnect: ({ attempt }) => reconnected.resolve(attempt),
      },
    });
    try {
      await within(reconnected.promise, 15_000, "reconnect");
      assert.equal((await qmp.execute("query-status")).status, "running");
      const extra = async () => (await sshProcesses(sshd)).slice(1);
      assert.deepEqual(await waitGone(extra, 3000), [], "the first tunnel's ssh ended");
    } finally {
      await qmp.close();
    }
    assert.deepEqual(await sshProcesses(sshd), []);
  },
});

const OWNER_FLAGS = ["--allow-read", "--allow-write", "--allow-net", "--allow-env"];

for (
  const [runFlag, guarded] of [["--allow-run", true], ["--allow-run=ssh", false]] as const
) {
  Deno.test({
    name: guarded
      ? "ssh: no ssh outlives an owner killed with SIGKILL (setpriv pdeathsig)"
      : "ssh: with --allow-run=ssh (no setpriv) the lost guarantee is warned about, naming the flag",
    ...T,
    async fn() {
      await using sshd = await startSshd();
      await using qemu = await startQemuForClients({ machine: "none" });
      const script = `
        import { connect } from ${
        JSON.stringify(new URL("../lib/client.ts", import.meta.url).href)
      };
        const qmp = await connect(${JSON.stringify(sshd.url(qemu.socketPath))},
          { ssh: { configFile: ${JSON.stringify(sshd.configFile)} }, timeout: "10s" });
        await qmp.execute("query-status");
        console.log("connected");
        await new Promise(() => {});
      `;
      const owner = new Deno.Command(Deno.execPath(), {
        args: ["run", ...OWNER_FLAGS, runFlag, "-"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = owner.stdin.getWriter();
      await w.write(new TextEncoder().encode(script));
      await w.close();
      const reader = owner.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const leftDirs: string[] = [];
      try {
        const first = await within(reader.read(), 20_000, "owner connected");
        if (!/connected/.test(first.value ?? "")) {
          owner.kill("SIGKILL");
          assert.fail(`the owner did not connect: ${await new Response(owner.stderr).text()}`);
        }
        const procs = await sshProcesses(sshd);
        assert.equal(procs.length, 1);
        // A SIGKILLed owner cannot remove its tunnel's temp dir: this test does.
        leftDirs.push(...tunnelDirs(procs));
        owner.kill("SIGKILL");
        await owner.status;
        const stderr = await new Response(owner.stderr).text();
        if (guarded) {
          assert.doesNotMatch(stderr, /warning/);
          assert.deepEqual(await waitGone(() => sshProcesses(sshd), 3000), [], "ssh died");
        } else {
          const warnings = stderr.split("\n").filter((l) => /setpriv/.test(l));
          assert.equal(warnings.length, 1, stderr);
          assert.match(warnings[0], /ssh started by connect\(\) will outlive this process/);
          assert.match(warnings[0], /--allow-run=ssh,setpriv/);
        }
      } finally {
        try {
          owner.kill("SIGKILL");
        } catch { /* gone */ }
        // Unguarded (or a failure): this test ends what the owner left.
        for (const p of await sshProcesses(sshd)) Deno.kill(p.pid, "SIGKILL");
        for (const d of leftDirs) await Deno.remove(d, { recursive: true }).catch(() => {});
        await owner.status;
        await reader.cancel().catch(() => {});
        if (!owner.stderr.locked) await owner.stderr.cancel().catch(() => {});
      }
    },
  });
}

Deno.test({
  name: "ssh: without setpriv, an owner's Deno.exit() (no close) still ends ssh (exit hook)",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const script = `
      import { connect } from ${JSON.stringify(new URL("../lib/client.ts", import.meta.url).href)};
      const qmp = await connect(${JSON.stringify(sshd.url(qemu.socketPath))},
        { ssh: { configFile: ${JSON.stringify(sshd.configFile)} }, timeout: "10s" });
      await qmp.execute("query-status");
      Deno.exit(0);
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...OWNER_FLAGS, "--allow-run=ssh", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(new TextEncoder().encode(script));
    await w.close();
    const done = await within(out.output(), 30_000, "owner exits");
    try {
      assert.equal(done.code, 0, new TextDecoder().decode(done.stderr));
      assert.deepEqual(await waitGone(() => sshProcesses(sshd), 2000), [], "ssh ended at exit");
    } finally {
      for (const p of await sshProcesses(sshd)) Deno.kill(p.pid, "SIGKILL");
    }
  },
});

Deno.test({
  name:
    "ssh: network failures ssh reports (no route, DNS, timeout) map to `unreachable` (fake ssh)",
  ...T,
  async fn() {
    // Outside addresses are off limits: a stand-in ssh prints what OpenSSH 9.2 prints.
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-fake-ssh-" });
    try {
      const cases: [string, RegExp][] = [
        [
          "ssh: connect to host 192.0.2.1 port 22: No route to host",
          /^Cannot reach vm-host with ssh: connect to host 192\.0\.2\.1 port 22: No route to host\. Check the host and port/,
        ],
        [
          "ssh: connect to host 192.0.2.1 port 22: Network is unreachable",
          /Network is unreachable/,
        ],
        [
          "ssh: connect to host 192.0.2.1 port 22: Connection timed out",
          /Connection timed out/,
        ],
        [
          "ssh: Could not resolve hostname vm-host: Name or service not known",
          /^Cannot reach vm-host: Could not resolve hostname vm-host: Name or service not known\. Check the host name/,
        ],
        [
          "kex_exchange_identification: read: Connection reset by peer",
          /Cannot reach vm-host with ssh: kex_exchange_identification/,
        ],
      ];
      for (const [i, [line, re]] of cases.entries()) {
        const fake = `${dir}/ssh${i}`;
        await Deno.writeTextFile(fake, `#!/bin/sh\necho '${line}' >&2\nexit 255\n`);
        await Deno.chmod(fake, 0o755);
        const err = await expectSshError(
          connect("ssh://vm-host/run/vm1/qmp.sock", { ssh: { binary: fake }, timeout: "5s" }),
          "unreachable",
          re,
        );
        assert.equal(err.sshMessage, line);
      }
      // Anything else: ssh's status and last line.
      const other = `${dir}/ssh-other`;
      await Deno.writeTextFile(other, `#!/bin/sh\necho 'something odd happened' >&2\nexit 3\n`);
      await Deno.chmod(other, 0o755);
      await expectSshError(
        connect("ssh://vm-host/run/vm1/qmp.sock", { ssh: { binary: other }, timeout: "5s" }),
        "exited",
        /^ssh to vm-host exited with status 3 before the tunnel to ssh:\/\/vm-host\/run\/vm1\/qmp\.sock was up: something odd happened$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
