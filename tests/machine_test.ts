/** The launcher against real QEMU: start, stop, crash, no orphans, several at once. */
import assert from "node:assert/strict";
import { launch, type Machine } from "../lib/machine.ts";
import { AbortError, ConnectionClosedError, LaunchError } from "../lib/errors.ts";
import { connect } from "../lib/client.ts";
import { within } from "./helpers/qemu.ts";
import { findTinyGuest } from "../lib/guest.ts";
import { alive, gone } from "./helpers/process.ts";

const guestBuilt = await findTinyGuest().then(() => true, () => false);
const LIB = new URL("../lib/machine.ts", import.meta.url).href;

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("machine: launch -machine none, use QMP, quit, clean up", async () => {
  const lines: string[] = [];
  const vm = await launch({ log: (l) => lines.push(l), timeout: "20s" });
  try {
    assert.equal((await Deno.stat(vm.dir)).mode! & 0o777, 0o700);
    assert.ok(await exists(vm.socketPath));
    assert.equal(vm.running, true);
    const st = await vm.qmp.execute("query-status");
    assert.equal(st.status, "running");
    assert.ok(vm.commandLine.includes("-qmp"));
  } finally {
    await vm.shutdown();
  }
  assert.equal(vm.exitCode, 0);
  assert.equal(vm.signal, undefined);
  assert.deepEqual(vm.shutdownSteps.map((s) => [s.step, s.exited]), [["quit", true]]);
  assert.equal(await exists(vm.dir), false, "temp dir removed");
  assert.equal(vm.qmp.closeError?.reason, "quit");
  assert.ok(lines.some((l) => l.includes("quit → exited")), lines.join("\n"));
});

Deno.test("machine: a missing binary is a LaunchError saying how to install QEMU", async () => {
  await assert.rejects(launch({ binary: "qemu-system-nonexistent" }), (e: unknown) => {
    assert.ok(e instanceof LaunchError);
    assert.match(e.message, /not found on PATH.*apt-get install qemu-system-x86/);
    return true;
  });
});

Deno.test("machine: an unopenable console log is a LaunchError before QEMU starts", async () => {
  await assert.rejects(
    launch({ consoleLog: "/nonexistent-dir/console.log" }),
    (e: unknown) => e instanceof LaunchError && /console log/.test(e.message),
  );
});

Deno.test("machine: bad arguments give a LaunchError with exit code and stderr", async () => {
  await assert.rejects(launch({ args: ["-no-such-option"], timeout: "20s" }), (e: unknown) => {
    assert.ok(e instanceof LaunchError);
    assert.equal(e.exitCode, 1);
    assert.match(e.stderr, /-no-such-option: invalid option/);
    assert.match(e.message, /exited before its QMP monitor was ready \(exit code 1\)/);
    assert.ok(e.commandLine.includes("-no-such-option"));
    return true;
  });
  await assert.rejects(
    launch({ args: ["-device", "no-such-device"], timeout: "20s" }),
    (e: unknown) => e instanceof LaunchError && /no-such-device/.test(e.stderr),
  );
});

Deno.test("machine: paused pc machine, SIGKILLed with a command pending", async () => {
  const vm = await launch({ machine: "pc", paused: true, memory: 64, timeout: "20s" });
  try {
    assert.equal((await vm.qmp.execute("query-status")).status, "prelaunch");
    const pending = vm.qmp.waitEvent("RESUME", { timeout: "20s" });
    Deno.kill(vm.pid, "SIGKILL");
    await assert.rejects(pending, ConnectionClosedError);
    await assert.rejects(vm.qmp.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.equal(e.reason, "peer");
      return true;
    });
    await vm.exited;
    assert.equal(vm.signal, "SIGKILL");
    assert.match(vm.describeExit()!, /^killed by SIGKILL/);
    assert.equal(vm.running, false);
  } finally {
    await vm.kill();
  }
  assert.equal(await exists(vm.dir), false);
});

Deno.test("machine: shutdown ladder falls through to SIGTERM when QMP is gone", async () => {
  const vm = await launch({ timeout: "20s" });
  await vm.qmp.close();
  await vm.shutdown({ termTimeout: "5s" });
  assert.deepEqual(vm.shutdownSteps.map((s) => s.step), ["SIGTERM"]);
  assert.equal(vm.exitCode, 0); // QEMU exits cleanly on SIGTERM
});

Deno.test("machine: a frozen QEMU walks the whole ladder: quit, SIGTERM, then SIGKILL", async () => {
  const vm = await launch({ timeout: "20s" });
  Deno.kill(vm.pid, "SIGSTOP"); // QEMU can neither answer quit nor act on SIGTERM
  await vm.shutdown({ quitTimeout: 300, termTimeout: 300 });
  assert.deepEqual(vm.shutdownSteps.map((s) => [s.step, s.exited]), [
    ["quit", false],
    ["SIGTERM", false],
    ["SIGKILL", true],
  ]);
  assert.equal(vm.signal, "SIGKILL");
  assert.equal(await exists(vm.dir), false);
});

Deno.test("machine: four VMs at once, each with its own socket", async () => {
  const vms: Machine[] = [];
  try {
    const launched = await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) => launch({ name: `par-${i}`, timeout: "30s" })),
    );
    for (const r of launched) if (r.status === "fulfilled") vms.push(r.value);
    assert.equal(vms.length, 4);
    assert.equal(new Set(vms.map((v) => v.socketPath)).size, 4);
    const names = await Promise.all(vms.map((v) => v.qmp.execute("query-name")));
    assert.deepEqual(names.map((n) => n.name), ["par-0", "par-1", "par-2", "par-3"]);
  } finally {
    await Promise.all(vms.map((v) => v.shutdown()));
  }
  for (const v of vms) assert.equal(v.exitCode, 0);
});

for (const how of ["throw", "SIGKILL", "SIGTERM", "SIGINT", "exit"] as const) {
  Deno.test(`machine: no orphan QEMU when the owner dies (${how})`, async () => {
    const dir = await Deno.makeTempDir();
    const script = `${dir}/owner.ts`;
    await Deno.writeTextFile(
      script,
      `import { launch } from ${JSON.stringify(LIB)};
const vm = await launch({ timeout: "20s" });
console.log(vm.pid, vm.dir);
${
        how === "throw"
          ? `await new Promise((r) => setTimeout(r, 200)); throw new Error("owner failed");`
          : how === "exit"
          ? `await new Promise((r) => setTimeout(r, 200)); Deno.exit(3);`
          : `await new Promise((r) => setTimeout(r, 60000));`
      }
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", "-A", script],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    let qemuPid = 0;
    let leftDir: string | undefined; // an owner killed by a signal cannot remove it
    try {
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      const [pidText, vmDir] = out.trim().split(" ");
      qemuPid = Number(pidText);
      leftDir = vmDir;
      assert.ok(qemuPid > 0, `owner printed ${JSON.stringify(out)}`);
      assert.equal(alive(qemuPid), true);
      if (how !== "throw" && how !== "exit") child.kill(how);
      await child.status;
      assert.equal(await gone(qemuPid), true, `QEMU ${qemuPid} outlived its owner (${how})`);
    } finally {
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      if (qemuPid && alive(qemuPid)) Deno.kill(qemuPid, "SIGKILL");
      if (leftDir) await Deno.remove(leftDir, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test({
  name: "machine: tiny guest boots to ready, console is writable, powerdown ends in SHUTDOWN guest",
  ignore: !guestBuilt,
  async fn() {
    const t0 = performance.now();
    await using vm = await launch({ guest: "tiny", memory: 256, timeout: "30s" });
    const guest = await findTinyGuest();
    await vm.console.waitFor(guest.readyMarker, { timeout: "90s" });
    const bootMs = performance.now() - t0;
    console.log(`tiny guest boot-to-ready: ${Math.round(bootMs)} ms (${vm.accel})`);
    // The guest's shell may not be reading the serial line yet right after the marker:
    // retype until it answers.
    let m;
    for (let attempt = 0; !m && attempt < 5; attempt++) {
      await vm.console.write("echo sum-$((40+2))\n");
      // Whole line: output streams in pieces, and /sum-(\d+)/ could match "sum-4".
      m = await vm.console.waitFor(/sum-(\d+)\r?\n/, { timeout: "4s" }).catch(() => undefined);
    }
    assert.ok(m, `no answer on the console: ${JSON.stringify(vm.console.tail(300))}`);
    assert.equal(m.groups[0], "42");
    const shutdown = vm.qmp.waitEvent("SHUTDOWN", { timeout: "60s" });
    await vm.shutdown({ powerdownTimeout: "60s" });
    const ev = await shutdown;
    assert.deepEqual(ev.data, { guest: true, reason: "guest-shutdown" });
    assert.equal(vm.shutdownSteps[0].step, "powerdown");
    assert.equal(vm.shutdownSteps[0].exited, true);
    assert.equal(vm.exitCode, 0);
  },
});

/** Pids of live processes whose command line contains `needle` (via `ps`: /proc needs -A). */
function pidsWith(needle: string): number[] {
  const out = new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,stat=,args="],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const pids: number[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (m && !m[2].startsWith("Z") && m[3].includes(needle) && Number(m[1]) !== Deno.pid) {
      pids.push(Number(m[1]));
    }
  }
  return pids;
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

/** Runs `owner.ts` under `flags`, returns its first stdout line (JSON) and a way to end it. */
async function startOwner(flags: string[], body: string) {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-owner-" });
  await Deno.writeTextFile(
    `${dir}/owner.ts`,
    `import { launch } from ${JSON.stringify(LIB)};\n${body}`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", ...flags, `${dir}/owner.ts`],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderrText = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  reader.releaseLock();
  const stdoutDone = child.stdout.cancel().catch(() => {});
  let ended: Promise<{ status: Deno.CommandStatus; stderr: string }> | undefined;
  return {
    first: out.trim(),
    end(signal: Deno.Signal) {
      ended ??= (async () => {
        try {
          child.kill(signal);
        } catch { /* exited */ }
        const status = await child.status;
        await stdoutDone;
        const stderr = await stderrText;
        await Deno.remove(dir, { recursive: true });
        return { status, stderr };
      })();
      return ended;
    },
  };
}

const OWNER_BODY = `const a = await launch({ timeout: "20s" });
const b = await launch({ timeout: "20s" });
console.log(JSON.stringify({ pids: [a.pid, b.pid], dirs: [a.dir, b.dir], guards: [a.orphanGuard, b.orphanGuard] }));
await new Promise((r) => setTimeout(r, 60000));
`;
const BASE_FLAGS = ["--allow-read", "--allow-write", "--allow-net", "--allow-env"];

for (const how of ["SIGKILL", "SIGTERM"] as const) {
  Deno.test(`machine: --allow-run=qemu-system-x86_64 without setpriv warns once, naming the permission (owner ${how})`, async () => {
    const owner = await startOwner([...BASE_FLAGS, "--allow-run=qemu-system-x86_64"], OWNER_BODY);
    let info: { pids: number[]; dirs: string[]; guards: string[] } | undefined;
    try {
      info = JSON.parse(owner.first);
      const { stderr } = await owner.end(how);
      const warnings = stderr.split("\n").filter((l) => /setpriv/.test(l));
      assert.equal(warnings.length, 1, `one warning for two launches, stderr:\n${stderr}`);
      assert.match(warnings[0], /--allow-run=.*setpriv/);
      assert.match(warnings[0], /orphan|outlive/i);
      assert.deepEqual(info!.guards, ["exit-hook", "exit-hook"]);
    } finally {
      await owner.end("SIGKILL").catch(() => {});
      if (info) {
        killAll(info.pids); // without setpriv nothing kills them: they are orphans now
        for (const d of info.dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
      }
    }
  });

  Deno.test(`machine: --allow-run=qemu-system-x86_64,setpriv keeps the guarantee, no warning (owner ${how})`, async () => {
    const owner = await startOwner(
      [...BASE_FLAGS, "--allow-run=qemu-system-x86_64,setpriv"],
      OWNER_BODY,
    );
    let info: { pids: number[]; dirs: string[]; guards: string[] } | undefined;
    try {
      info = JSON.parse(owner.first);
      const { stderr } = await owner.end(how);
      assert.doesNotMatch(stderr, /setpriv/);
      assert.deepEqual(info!.guards, ["pdeathsig", "pdeathsig"]);
      for (const pid of info!.pids) {
        assert.equal(await gone(pid), true, `QEMU ${pid} outlived its owner (${how})`);
      }
    } finally {
      await owner.end("SIGKILL").catch(() => {});
      if (info) {
        killAll(info.pids);
        for (const d of info.dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
      }
    }
  });
}

for (
  const args of [["-daemonize"], ["--daemonize"], ["-runas", "nobody"]]
) {
  Deno.test(`machine: ${args.join(" ")} is refused before QEMU starts; nothing is left running`, async () => {
    const name = `escape-${Deno.pid}-${Date.now()}`;
    try {
      await assert.rejects(launch({ name, args, timeout: "10s" }), (e: unknown) => {
        assert.ok(e instanceof LaunchError, String(e));
        assert.match(e.message, new RegExp(`${args[0]}.*(detach|owner)`));
        assert.equal(e.exitCode, undefined, "QEMU was never started");
        return true;
      });
      await new Promise((r) => setTimeout(r, 300)); // a daemon would be up by now
      assert.deepEqual(pidsWith(name), [], `a QEMU named ${name} is still running`);
    } finally {
      killAll(pidsWith(name));
    }
  });
}

Deno.test("machine: a second QMP monitor in args is still accepted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-second-" });
  try {
    await using vm = await launch({
      args: ["-qmp", `unix:${dir}/second.sock,server=on,wait=off`],
      timeout: "20s",
    });
    await using second = await connect(`unix:${dir}/second.sock`, { timeout: "5s", retry: true });
    assert.equal((await second.execute("query-name")).name, vm.name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("machine: a binary that exits leaving a grandchild on its pipes: launch rejects in time, grandchild killed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-fakeqemu-" });
  const fake = `${dir}/qemu-system-x86_64`;
  await Deno.writeTextFile(
    fake,
    `#!/bin/sh
sleep 30 &
echo $! > "${dir}/grandchild.pid"
echo "fake qemu: exiting; my child keeps stdout and stderr open" >&2
exit 0
`,
  );
  await Deno.chmod(fake, 0o755);
  let grandchild = 0;
  try {
    const t0 = performance.now();
    const outcome = await within(
      launch({ binary: fake, timeout: "3s" }).then(
        (vm) => ({ vm, error: undefined }),
        (error: unknown) => ({ vm: undefined, error }),
      ),
      12_000,
      "launch() with a grandchild holding the pipes",
    );
    const ms = Math.round(performance.now() - t0);
    grandchild = Number((await Deno.readTextFile(`${dir}/grandchild.pid`)).trim());
    console.log(`fake QEMU with a grandchild on its pipes: launch rejected after ${ms} ms`);
    assert.equal(outcome.vm, undefined);
    assert.ok(outcome.error instanceof LaunchError, String(outcome.error));
    assert.match(outcome.error.message, /exited before its QMP monitor was ready \(exit code 0\)/);
    assert.match(outcome.error.stderr, /fake qemu: exiting/);
    assert.ok(ms < 3000 + 1500, `rejected after ${ms} ms (timeout 3s)`);
    assert.equal(await gone(grandchild, 3000), true, `grandchild ${grandchild} left running`);
  } finally {
    if (!grandchild) {
      grandchild = Number(await Deno.readTextFile(`${dir}/grandchild.pid`).catch(() => "0"));
    }
    if (grandchild > 0) killAll([grandchild]);
    await Deno.remove(dir, { recursive: true });
  }
});

/** A QEMU that never greets on our monitor: a second monitor waits for a client first. */
async function blockedLaunchArgs(): Promise<{ dir: string; args: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-blocked-" });
  return { dir, args: ["-qmp", `unix:${dir}/blocker.sock,server=on,wait=on`] };
}

Deno.test("machine: a launch timeout is reported as a timeout, not as QEMU exiting (SIGKILL, 137)", async () => {
  const { dir, args } = await blockedLaunchArgs();
  const name = `timeout-${Deno.pid}-${Date.now()}`;
  try {
    const t0 = performance.now();
    const error = await within(
      launch({ name, args, timeout: "2s" }).then(() => undefined, (e: unknown) => e),
      10_000,
      "launch with timeout 2s",
    );
    const ms = Math.round(performance.now() - t0);
    console.log(`launch timeout 2s: rejected after ${ms} ms`);
    assert.ok(error instanceof LaunchError, String(error));
    assert.doesNotMatch(error.message, /exited before/);
    assert.match(error.message, /within 2(\.00)?s/);
    assert.match(error.message, /killed/);
    assert.equal(error.timeoutMs, 2000);
    assert.equal(error.exitCode, undefined);
    assert.equal(error.signal, undefined);
    assert.match(error.stderr, /waiting for connection/, "QEMU's stderr says why it hung");
    assert.ok(ms >= 1900 && ms < 2000 + 1500, `rejected after ${ms} ms`);
    assert.deepEqual(pidsWith(name), [], "QEMU was killed");
  } finally {
    killAll(pidsWith(name));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("machine: an aborted launch is an AbortError, not QEMU exiting (SIGKILL, 137)", async () => {
  const { dir, args } = await blockedLaunchArgs();
  const name = `abort-${Deno.pid}-${Date.now()}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error("user gave up")), 500);
  try {
    const t0 = performance.now();
    const error = await within(
      launch({ name, args, timeout: "20s", signal: controller.signal }).then(
        () => undefined,
        (e: unknown) => e,
      ),
      10_000,
      "aborted launch",
    );
    const ms = Math.round(performance.now() - t0);
    console.log(`launch aborted at 500 ms: rejected after ${ms} ms`);
    assert.ok(error instanceof AbortError, String(error));
    assert.match(error.message, new RegExp(`${name}.*aborted`));
    assert.equal((error.cause as Error).message, "user gave up");
    assert.ok(ms < 500 + 1500, `rejected after ${ms} ms`);
    assert.deepEqual(pidsWith(name), [], "QEMU was killed");
  } finally {
    clearTimeout(timer);
    killAll(pidsWith(name));
    await Deno.remove(dir, { recursive: true });
  }
});
