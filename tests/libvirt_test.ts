/**
 * The libvirt transport against a real local libvirtd (started here when not running):
 * QMP passthrough with hidden ids and a synthesized greeting, monitor events, and each bad
 * input named with libvirt's own message, bounded in time.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { formatAddress, parseAddress } from "../lib/address.ts";
import {
  ConnectionClosedError,
  NegotiationError,
  QmpCommandError,
  TimeoutError,
} from "../lib/errors.ts";
import { LibvirtError, whenLibvirtIdle } from "../lib/libvirt_ffi.ts";
import {
  createDomain,
  domainXml,
  ensureLibvirtd,
  killLibvirtd,
  libvirtdAnswers,
  libvirtdStartedHere,
  libvirtSkipReason,
  loadLibvirtFirst,
  releaseLibvirtd,
  uniqueName,
  virsh,
} from "./helpers/libvirtd.ts";

const skip = libvirtSkipReason();
const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("libvirt addresses parse and format", () => {
  assert.deepEqual(parseAddress("libvirt:vm1"), { transport: "libvirt", domain: "vm1" });
  assert.deepEqual(parseAddress("libvirt+qemu:///system#vm1"), {
    transport: "libvirt",
    uri: "qemu:///system",
    domain: "vm1",
  });
  assert.deepEqual(parseAddress("libvirt+qemu+ssh://root@host/system?keyfile=/k#web-1"), {
    transport: "libvirt",
    uri: "qemu+ssh://root@host/system?keyfile=/k",
    domain: "web-1",
  });
  for (const s of ["libvirt:vm1", "libvirt+qemu+tcp://127.0.0.1:1/system#x"]) {
    assert.equal(formatAddress(parseAddress(s)), s);
  }
  assert.deepEqual(parseAddress({ transport: "libvirt", domain: "d" }), {
    transport: "libvirt",
    domain: "d",
  });
  assert.throws(() => parseAddress("libvirt:"), /domain name is empty/);
  assert.throws(() => parseAddress("libvirt:qemu:///system"), /libvirt\+URI#DOMAIN/);
  assert.throws(() => parseAddress("libvirt+qemu:///system"), /missing '#DOMAIN'/);
  assert.throws(() => parseAddress("libvirt+qemu:///system#"), /domain name is empty/);
  assert.throws(() => parseAddress("libvirt+nouri#d"), /not a libvirt URI/);
});

/** Runs a deno script as a subprocess; killed after `timeoutMs`. */
async function denoRun(
  flags: string[],
  code: string,
  timeoutMs = 30_000,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    signal: AbortSignal.timeout(timeoutMs),
  }).spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(code));
  await w.close();
  const r = await out.output();
  const d = new TextDecoder();
  return {
    code: r.code,
    stdout: d.decode(r.stdout),
    stderr: d.decode(r.stderr),
    ms: performance.now() - t0,
  };
}

/** Asserts that `p` rejects within `ms` and returns the error. */
async function rejectsWithin(p: Promise<unknown>, ms: number): Promise<Error> {
  const t0 = performance.now();
  const err = await p.then(
    () => assert.fail("expected a rejection"),
    (e) => e as Error,
  );
  assert.ok(performance.now() - t0 < ms, `took ${performance.now() - t0} ms`);
  return err;
}

loadLibvirtFirst();

Deno.test({
  name: "libvirt: daemon not running (the real default socket, before any test starts it)",
  ignore: skip !== undefined || libvirtdAnswers(),
  async fn() {
    const err = await rejectsWithin(connect("libvirt:anything", { timeout: "10s" }), 10_000);
    assert.ok(err instanceof LibvirtError, String(err));
    assert.match(
      err.message,
      /^Cannot connect to libvirt at qemu:\/\/\/system: libvirt: Failed to connect socket to '\/var\/run\/libvirt\/libvirt-sock': No such file or directory$/,
    );
    await whenLibvirtIdle(1_000);
  },
});

Deno.test({
  name: "libvirt: QMP passthrough, events, and bad input",
  ignore: skip !== undefined,
  async fn(t) {
    await ensureLibvirtd();
    const dom = await createDomain();
    try {
      await t.step("greeting, typed execute, hidden ids, both address forms", async () => {
        const sent: unknown[] = [];
        await using qmp = await connect(`libvirt:${dom.name}`, {
          transcript: (e) => e.direction === "recv" && sent.push(e.message),
        });
        assert.equal(qmp.address, `libvirt:${dom.name}`);
        assert.equal(qmp.greeting.version.qemu.major, 7);
        assert.deepEqual(qmp.greeting.capabilities, []);
        const status = await qmp.execute("query-status");
        assert.equal(status.status, "running");
        // Replies carry the client's ids, never libvirt's "libvirt-N".
        assert.ok(sent.every((m) => !String((m as { id?: unknown }).id).startsWith("libvirt-")));
        // Pipelined commands all answer, in order.
        const many = await Promise.all(
          Array.from({ length: 20 }, () => qmp.execute("query-status")),
        );
        assert.equal(many.length, 20);
        await using again = await connect(`libvirt+qemu:///system#${dom.name}`);
        assert.equal((await again.execute("query-name")).name, dom.name);
      });

      await t.step("exact integers survive libvirt both ways (beyond 2^53)", async () => {
        await using qmp = await connect(`libvirt:${dom.name}`);
        const bw = 9007199254740993n;
        await qmp.execute("migrate-set-parameters", { "max-bandwidth": bw });
        assert.equal((await qmp.execute("query-migrate-parameters"))["max-bandwidth"], bw);
        await qmp.execute("migrate-set-parameters", { "max-bandwidth": 33554432 });
      });

      await t.step("command errors stay QMP errors", async () => {
        await using qmp = await connect(`libvirt:${dom.name}`);
        const err = await rejectsWithin(qmp.execute("device_del", { id: "nope" }), 10_000);
        assert.ok(err instanceof QmpCommandError);
        assert.equal(err.class, "DeviceNotFound");
      });

      await t.step("events: waitEvent armed before, mark()/since, data and timestamp", async () => {
        await using qmp = await connect(`libvirt:${dom.name}`);
        const stop = qmp.waitEvent("STOP", { timeout: "10s" });
        await qmp.execute("stop");
        const ev = await stop;
        assert.equal(ev.event, "STOP");
        assert.ok(ev.timestamp.seconds > 1_600_000_000);
        const mark = qmp.mark();
        await qmp.execute("cont");
        await qmp.waitEvent("RESUME", { since: mark, timeout: "10s" });
        const reset = qmp.waitEvent("RESET", { timeout: "10s" });
        await qmp.execute("system_reset");
        assert.deepEqual((await reset).data, { guest: false, reason: "host-qmp-system-reset" });
      });

      await t.step("oob is refused at negotiation (libvirt does not offer it)", async () => {
        const err = await rejectsWithin(connect(`libvirt:${dom.name}`, { oob: true }), 10_000);
        assert.ok(err instanceof NegotiationError, String(err));
      });

      await t.step("unknown domain", async () => {
        const name = uniqueName("absent");
        const err = await rejectsWithin(connect(`libvirt:${name}`), 10_000);
        assert.ok(err instanceof LibvirtError);
        assert.match(err.message, new RegExp(`no domain with matching name '${name}'`));
        assert.doesNotMatch(err.message, /\n/);
      });

      await t.step("a domain that is shut off", async () => {
        const name = uniqueName("off");
        const dir = await Deno.makeTempDir();
        await Deno.writeTextFile(`${dir}/d.xml`, domainXml({ name }));
        await virsh("define", `${dir}/d.xml`);
        try {
          const err = await rejectsWithin(connect(`libvirt:${name}`), 10_000);
          assert.ok(err instanceof LibvirtError);
          assert.match(err.message, /is not running .*libvirt: .*domain is not running/);
        } finally {
          await virsh("undefine", name).catch(() => undefined);
          await Deno.remove(dir, { recursive: true });
        }
      });

      await t.step("daemon not running (no socket at the URI's path)", async () => {
        const err = await rejectsWithin(
          connect(`libvirt+qemu:///system?socket=/nonexistent/libvirt-sock#${dom.name}`),
          10_000,
        );
        assert.ok(err instanceof LibvirtError);
        assert.match(err.message, /Failed to connect socket to '\/nonexistent\/libvirt-sock'/);
      });

      await t.step("a remote URI that cannot connect (loopback, nothing listening)", async () => {
        const err = await rejectsWithin(
          connect(`libvirt+qemu+tcp://127.0.0.1:1/system#${dom.name}`),
          10_000,
        );
        assert.ok(err instanceof LibvirtError);
        assert.match(err.message, /Cannot connect to libvirt at qemu\+tcp:.*Connection refused/);
      });

      await t.step("a remote URI whose server never answers: TimeoutError in time", async () => {
        // A local listener that never accepts: the TCP handshake completes in the
        // backlog, and libvirt waits for its first reply forever.
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const { port } = listener.addr as Deno.NetAddr;
        try {
          const err = await rejectsWithin(
            connect(`libvirt+qemu+tcp://127.0.0.1:${port}/system#x`, { timeout: "1500ms" }),
            5_000,
          );
          assert.ok(err instanceof TimeoutError, String(err));
          assert.match(err.message, /libvirt\+qemu\+tcp:\/\/127\.0\.0\.1:\d+\/system#x/);
        } finally {
          listener.close(); // resets the queued connection: libvirt's blocked open returns
        }
        await whenLibvirtIdle(10_000); // and that late connection is closed, the loop stopped
      });

      await t.step("permission denied on the libvirt socket (unprivileged user)", async () => {
        const dir = await Deno.makeTempDir();
        await Deno.chmod(dir, 0o755);
        const locked = `${dir}/locked`; // a 0700 directory holding a link to the socket
        await Deno.mkdir(locked, { mode: 0o700 });
        await Deno.symlink("/run/libvirt/libvirt-sock", `${locked}/sock`);
        try {
          const script = `import { connect } from "${ROOT}lib/client.ts";\n` +
            `for (const a of Deno.args) {\n` +
            `  try { await connect(a); } catch (e) { console.log(e.message); }\n` +
            `}\n`;
          const file = `${dir}/probe.ts`;
          await Deno.writeTextFile(file, script);
          await Deno.chmod(file, 0o644);
          const out = await new Deno.Command("setpriv", {
            args: [
              "--reuid=65534",
              "--regid=65534",
              "--clear-groups",
              Deno.execPath(),
              "run",
              "--quiet",
              "--allow-all",
              file,
              `libvirt+qemu:///system?socket=${locked}/sock#${dom.name}`,
              `libvirt:${dom.name}`,
            ],
            env: { DENO_DIR: `${dir}/cache`, HOME: dir, NO_COLOR: "1" },
            stdout: "piped",
            stderr: "piped",
            signal: AbortSignal.timeout(30_000),
          }).output();
          const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
          const all = lines.join("\n") + new TextDecoder().decode(out.stderr);
          assert.equal(lines.length, 2, all);
          assert.match(
            lines[0],
            /^Cannot connect to libvirt at qemu:.*: libvirt: Failed to connect socket to '.*\/locked\/sock': Permission denied$/,
          );
          // libvirtd itself refuses an unprivileged client (its polkit check; the text
          // depends on the host: here polkit is unreachable without a system bus).
          assert.match(lines[1], /^Cannot connect to libvirt at qemu:\/\/\/system: libvirt: \S/);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      });

      await t.step("without --allow-ffi: the error names the flag", async () => {
        const r = await denoRun(
          ["--allow-read", "--allow-env"],
          `import { connect } from "./lib/client.ts";\n` +
            `try { await connect("libvirt:${dom.name}"); } catch (e) { console.log(e.message); }`,
        );
        assert.match(r.stdout, /--allow-ffi/);
      });

      await t.step("libvirt:DOMAIN follows $LIBVIRT_DEFAULT_URI", async () => {
        const r = await denoRun(
          ["--allow-ffi", "--allow-env", "--allow-read"],
          `import { connect } from "./lib/client.ts";\n` +
            `try { await connect("libvirt:${dom.name}"); } catch (e) { console.log(e.message); }`,
          20_000,
          { LIBVIRT_DEFAULT_URI: "qemu:///system?socket=/nonexistent/sock" },
        );
        assert.match(
          r.stdout,
          /^Cannot connect to libvirt at qemu:\/\/\/system\?socket=\/nonexistent\/sock: /,
        );
      });

      await t.step("a script exits after close() (the event loop thread stops)", async () => {
        const r = await denoRun(
          ["--allow-ffi", "--allow-env", "--allow-read"],
          `import { connect } from "./lib/client.ts";\n` +
            `const qmp = await connect("libvirt:${dom.name}");\n` +
            `const w = qmp.waitEvent("STOP", { timeout: "10s" });\n` +
            `await qmp.execute("stop"); await w; await qmp.execute("cont");\n` +
            `await qmp.close(); console.log("closed");`,
          20_000,
        );
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /closed/);
      });
      await t.step("nothing left open: no libvirt connection, event loop stopped", async () => {
        await whenLibvirtIdle(1_000);
      });
    } finally {
      await dom.destroy();
      await releaseLibvirtd();
    }
  },
});

Deno.test({
  name: "libvirt: library not installed (hidden in a private mount namespace)",
  ignore: skip !== undefined,
  async fn() {
    // /dev/null bound over libvirt.so.0's file, in a namespace of this command only.
    const lib = await Deno.realPath("/usr/lib/x86_64-linux-gnu/libvirt.so.0");
    const out = await new Deno.Command("unshare", {
      args: [
        "-m",
        "sh",
        "-c",
        `mount --bind /dev/null ${lib} && exec "$0" run --quiet --allow-all -`,
        Deno.execPath(),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      signal: AbortSignal.timeout(30_000),
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(
      new TextEncoder().encode(
        `import { connect } from "./lib/client.ts";\n` +
          `try { await connect("libvirt:x"); } catch (e) { console.log(e.message); }`,
      ),
    );
    await w.close();
    const r = await out.output();
    const text = new TextDecoder().decode(r.stdout).trim();
    assert.match(
      text,
      /^libvirt is not installed: cannot load libvirt\.so\.0 \(.*\)\. Install the client library: apt-get install libvirt-clients$/,
      text + new TextDecoder().decode(r.stderr),
    );
  },
});

Deno.test({
  name: "libvirt: a domain destroyed mid-command, and quit",
  ignore: skip !== undefined,
  async fn(t) {
    await ensureLibvirtd();
    try {
      await t.step("destroyed while commands run: they fail, nothing hangs", async () => {
        await using dom = await createDomain();
        await using qmp = await connect(`libvirt:${dom.name}`);
        const flood = (async () => {
          for (let i = 0; i < 10_000; i++) await qmp.execute("query-status");
        })();
        flood.catch(() => {}); // awaited below
        await new Promise((r) => setTimeout(r, 200));
        await virsh("destroy", dom.name);
        const err = await rejectsWithin(flood, 15_000);
        assert.ok(err instanceof ConnectionClosedError, String(err));
        const after = await rejectsWithin(qmp.execute("query-status"), 5_000);
        assert.ok(after instanceof ConnectionClosedError);
      });

      await t.step("QEMU frozen (SIGSTOP): timeout, bounded close(), released later", async () => {
        await using dom = await createDomain();
        const qmp = await connect(`libvirt:${dom.name}`);
        const pid = Number((await Deno.readTextFile(`/run/libvirt/qemu/${dom.name}.pid`)).trim());
        Deno.kill(pid, "SIGSTOP");
        try {
          const err = await rejectsWithin(
            qmp.execute("query-status", undefined, { timeout: "1s" }),
            3_000,
          );
          assert.ok(err instanceof TimeoutError, String(err));
          const t0 = performance.now();
          await qmp.close(); // the command is still inside libvirt: close() does not wait for it
          assert.ok(performance.now() - t0 < 8_000);
        } finally {
          Deno.kill(pid, "SIGCONT");
        }
        await whenLibvirtIdle(15_000); // the stuck call returned, the connection was closed
      });

      await t.step({
        name: "libvirtd dies while connected: the client hears of it at once",
        ignore: !libvirtdStartedHere(), // never kill a libvirtd these tests did not start
        fn: async () => {
          const dom = await createDomain();
          try {
            const qmp = await connect(`libvirt:${dom.name}`);
            const waiting = qmp.waitEvent("STOP", { timeout: "30s" });
            await killLibvirtd();
            const err = await rejectsWithin(waiting, 10_000);
            assert.ok(err instanceof ConnectionClosedError, String(err));
            assert.match(String(err.cause), /libvirt: connection closed by end of file/);
            await qmp.close();
          } finally {
            await releaseLibvirtd(); // restart the daemons: the domain is still running
            await ensureLibvirtd();
            await dom.destroy();
          }
        },
      });

      await t.step("retry: true waits for a domain that is not there yet", async () => {
        const name = uniqueName("later");
        const pending = connect(`libvirt:${name}`, { retry: true, timeout: "30s" });
        pending.catch(() => {}); // awaited below
        await new Promise((r) => setTimeout(r, 300));
        await using dom = await createDomain({ name });
        await using qmp = await pending;
        assert.equal((await qmp.execute("query-name")).name, dom.name);
      });

      await t.step("quit: the reply, then the stream ends as after quit", async () => {
        await using dom = await createDomain();
        await using qmp = await connect(`libvirt:${dom.name}`);
        await qmp.execute("quit");
        const err = await rejectsWithin(
          qmp.waitEvent("BLOCK_JOB_READY", { timeout: "15s" }),
          15_000,
        );
        assert.ok(err instanceof ConnectionClosedError, String(err));
        assert.equal(err.reason, "quit");
      });

      await t.step("nothing left open: no libvirt connection, event loop stopped", async () => {
        await whenLibvirtIdle(1_000);
      });
    } finally {
      await releaseLibvirtd();
    }
  },
});
