/**
 * launchStorageDaemon() against the real qemu-storage-daemon: QMP with the
 * daemon's schema, an NBD export read and written back with qemu-io and
 * qemu-img, the shutdown ladder (quit; SIGTERM when QMP is gone; SIGKILL when
 * frozen), early exit and refused arguments as LaunchError, a private 0700
 * socket dir removed at exit, no orphan when the owner dies, and the
 * generated types being up to date with the daemon's live schema.
 */
import assert from "node:assert/strict";
import { LaunchError, launchStorageDaemon, QmpCommandError, qomTree } from "../mod.ts";
import { alive, gone } from "./helpers/process.ts";

const LIB = new URL("../lib/storage_daemon.ts", import.meta.url).href;
const GEN = new URL("../scripts/gen-qapi.ts", import.meta.url).pathname;

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout) + d.decode(o.stderr) };
}

Deno.test("storage daemon: launch, QMP with its schema, NBD export written and read back, quit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-qsd-test-" });
  try {
    const image = `${dir}/disk.qcow2`;
    assert.equal((await run("qemu-img", ["create", "-f", "qcow2", image, "8M"])).code, 0);
    const logs: string[] = [];
    const qsd = await launchStorageDaemon({ log: (m) => logs.push(m), timeout: "20s" });
    try {
      // Private socket dir, 0700.
      assert.equal((await Deno.stat(qsd.dir)).mode! & 0o777, 0o700);
      assert.ok((await Deno.stat(qsd.socketPath)).isSocket);
      const v = await qsd.qmp.execute("query-version");
      assert.equal(v.qemu.major, 7);
      // The system emulator's commands are not there (and fail deno check, see the types test).
      await assert.rejects(qsd.qmp.executeRaw("query-status"), (e: unknown) => {
        assert.ok(e instanceof QmpCommandError);
        assert.equal(e.class, "CommandNotFound");
        return true;
      });
      await qsd.qmp.execute("blockdev-add", {
        driver: "qcow2",
        "node-name": "d0",
        file: { driver: "file", filename: image },
      });
      const nbd = `${dir}/nbd.sock`;
      await qsd.qmp.execute("nbd-server-start", {
        addr: { type: "unix", data: { path: nbd } },
      });
      await qsd.qmp.execute("block-export-add", {
        type: "nbd",
        id: "e0",
        "node-name": "d0",
        name: "disk",
        writable: true,
      });
      const exports = await qsd.qmp.execute("query-block-exports");
      assert.deepEqual(exports.map((e) => [e.id, e.type, e["node-name"]]), [["e0", "nbd", "d0"]]);
      const url = `nbd+unix:///disk?socket=${nbd}`;
      const w = await run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 1M 64k", url]);
      assert.equal(w.code, 0, w.out);
      const r = await run("qemu-io", ["-f", "raw", "-c", "read -P 0x5a 1M 64k", url]);
      assert.equal(r.code, 0, r.out);
      assert.doesNotMatch(r.out, /Pattern verification failed/);
      const info = await run("qemu-img", ["info", "--output=json", url]);
      assert.equal(JSON.parse(info.out)["virtual-size"], 8 * 1024 * 1024, info.out);
      // QOM works on the daemon too.
      const tree = await qomTree(qsd.qmp, "/");
      assert.ok(tree.children.some((c) => c.name === "chardevs"), JSON.stringify(tree));
      await qsd.qmp.execute("block-export-del", { id: "e0" });
    } finally {
      await qsd.shutdown();
    }
    assert.deepEqual(qsd.shutdownSteps.map((s) => [s.step, s.exited]), [["quit", true]]);
    assert.equal(qsd.exitCode, 0);
    assert.equal(await Deno.stat(qsd.dir).then(() => true, () => false), false, "dir removed");
    assert.ok(logs.some((l) => /QMP ready \(qemu-storage-daemon 7\./.test(l)), logs.join("\n"));
    // The write reached the image file.
    const check = await run("qemu-io", ["-f", "qcow2", "-c", "read -P 0x5a 1M 64k", image]);
    assert.equal(check.code, 0, check.out);
    assert.doesNotMatch(check.out, /Pattern verification failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("storage daemon: a bad --blockdev is a LaunchError with exit code and output", async () => {
  const err = await launchStorageDaemon({
    args: ["--blockdev", "driver=file,node-name=f0,filename=/nonexistent/qmpkit.img"],
    timeout: "20s",
  }).then(() => undefined, (e) => e);
  assert.ok(err instanceof LaunchError, String(err));
  assert.equal(err.exitCode, 1);
  assert.match(err.stderr, /nonexistent\/qmpkit\.img/);
  assert.match(err.message, /exited before its QMP monitor was ready/);
});

Deno.test("storage daemon: --daemonize and a missing binary are refused before anything starts", async () => {
  await assert.rejects(launchStorageDaemon({ args: ["--daemonize"] }), (e: unknown) => {
    assert.ok(e instanceof LaunchError);
    assert.match(e.message, /refuses --daemonize/);
    return true;
  });
  await assert.rejects(
    launchStorageDaemon({ binary: "/nonexistent/qemu-storage-daemon" }),
    (e: unknown) => {
      assert.ok(e instanceof LaunchError);
      assert.match(e.message, /no such file.*qemu-utils/);
      return true;
    },
  );
});

Deno.test("storage daemon: the ladder goes to SIGTERM when QMP is closed, SIGKILL when frozen", async () => {
  const a = await launchStorageDaemon({ timeout: "20s" });
  await a.qmp.close();
  await a.shutdown({ termTimeout: "5s" });
  assert.deepEqual(a.shutdownSteps.map((s) => [s.step, s.exited]), [["SIGTERM", true]]);

  const b = await launchStorageDaemon({ timeout: "20s" });
  Deno.kill(b.pid, "SIGSTOP");
  try {
    await b.shutdown({ quitTimeout: "300ms", termTimeout: "300ms" });
  } finally {
    try {
      Deno.kill(b.pid, "SIGCONT");
    } catch { /* gone */ }
  }
  assert.deepEqual(b.shutdownSteps.map((s) => [s.step, s.exited]), [
    ["quit", false],
    ["SIGTERM", false],
    ["SIGKILL", true],
  ]);
  assert.equal(b.signal, "SIGKILL");
});

Deno.test("storage daemon: no orphan when the owner is SIGKILLed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-qsd-owner-" });
  await Deno.writeTextFile(
    `${dir}/owner.ts`,
    `import { launchStorageDaemon } from ${JSON.stringify(LIB)};
const d = await launchStorageDaemon({ timeout: "20s" });
console.log(d.pid, d.dir);
await new Promise((r) => setTimeout(r, 60000));
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", "-A", `${dir}/owner.ts`],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pid = 0;
  let leftDir: string | undefined;
  try {
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    [pid, leftDir] = [Number(out.split(" ")[0]), out.trim().split(" ")[1]];
    assert.ok(pid > 0 && alive(pid), out);
    child.kill("SIGKILL");
    await child.status;
    assert.equal(await gone(pid), true, `qemu-storage-daemon ${pid} outlived its owner`);
  } finally {
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    if (leftDir) await Deno.remove(leftDir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gen-qapi --storage-daemon: the checked-in types match the fixture and the live daemon", async () => {
  for (
    const source of [
      ["--schema", "tests/fixtures/qsd-qmp-schema-7.2.json", "--qemu-version", "7.2.22"],
      ["--launch"],
    ]
  ) {
    const r = await run(Deno.execPath(), [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-net",
      "--allow-env",
      GEN,
      "--storage-daemon",
      ...source,
      "--check",
    ]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /storage_daemon_types\.ts is up to date/);
    assert.match(r.out, /365 types shared with lib\/qapi\/types\.ts, 0 differ/);
  }
});

Deno.test("storage daemon: without setpriv the one-time warning names the daemon, not QEMU", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-qsd-guard-" });
  try {
    const script = `${dir}/owner.ts`;
    await Deno.writeTextFile(
      script,
      `import { launchStorageDaemon } from "${LIB}";\n` +
        `const d = await launchStorageDaemon({ timeout: "20s" });\n` +
        `console.log(d.orphanGuard);\nawait d.shutdown();\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-net",
        "--allow-run=qemu-storage-daemon",
        script,
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /qemu-storage-daemon started by launchStorageDaemon\(\) will outlive/);
    assert.doesNotMatch(stderr, /QEMU started by launch\(\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
