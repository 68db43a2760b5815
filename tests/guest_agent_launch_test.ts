/**
 * `launch({ guest: "tiny", agent: true })` against real QEMU and the real qemu-ga inside the
 * tiny guest (`deno task guest` builds it): one boot shared by the steps (the socket free until
 * vm.agent is used, guest-info, exec, files, fsfreeze on a real ext2 disk, the agent dying and
 * coming back), then a shutdown through
 * the agent. Plus the launcher's errors, which need no boot. The boot test is ignored when the
 * guest is not built, was built without qemu-ga, or QEMU is missing.
 *
 * Permissions: --allow-read --allow-write --allow-env --allow-run (qemu-system-x86_64, setpriv).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { launch } from "../lib/machine.ts";
import { within } from "./helpers/qemu.ts";
import { LaunchError, QmpError } from "../lib/errors.ts";
import { AgentCommandError, AgentError, AgentPortClosedError } from "../lib/agent/errors.ts";
import { AGENT_DEFAULT_MEMORY_MIB, agentArgs } from "../lib/agent_channel.ts";
import { connectAgent } from "../lib/agent/client.ts";
import { parseLdd } from "../scripts/build-guest.ts";
import { findAgentGuest } from "./helpers/guest.ts";

const { guest, skip } = await findAgentGuest("tests/guest_agent_launch_test.ts");

Deno.test({
  name: "agent launch: the tiny guest's qemu-ga over vm.agent (one boot)",
  ignore: skip !== "",
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-agent-test-" });
    // A small raw disk the guest formats and mounts, so fsfreeze has a filesystem to freeze
    // (the initramfs root and tmpfs cannot be frozen).
    const disk = join(dir, "disk.raw");
    await Deno.writeFile(disk, new Uint8Array(0));
    await Deno.truncate(disk, 8 * 1024 * 1024);
    const vm = await launch({
      guest: "tiny",
      agent: true,
      accel: "tcg",
      timeout: "60s",
      args: [
        "-drive",
        `file=${disk},format=raw,if=none,id=d0`,
        "-device",
        "virtio-blk-pci,drive=d0,serial=qmpkit-frz",
      ],
    });
    try {
      await t.step("the launcher adds the agent channel and 256 MiB", () => {
        const line = vm.commandLine.join(" ");
        assert.ok(vm.agentSocketPath?.startsWith(vm.dir), vm.agentSocketPath);
        assert.ok(line.includes(agentArgs(vm.agentSocketPath!).join(" ")), line);
        assert.ok(line.includes(`-m ${AGENT_DEFAULT_MEMORY_MIB}`), line);
      });

      await t.step("until vm.agent is used, the socket is free for another client", async () => {
        // e.g. `qmp agent unix:<vm.agentSocketPath> ...` from a shell while the script runs
        const other = await connectAgent(`unix:${vm.agentSocketPath}`, { sync: false });
        try {
          await within(other.waitReady({ timeout: "90s" }), 120_000, "waitReady");
          assert.equal((await other.osInfo()).id, "qmpkit-tiny");
        } finally {
          await other.close();
        }
      });

      await t.step("waitReady, then guest-info answers", async () => {
        await within(vm.agent.waitReady({ timeout: "30s" }), 60_000, "waitReady");
        const info = await vm.agent.info();
        assert.match(info.version, /^\d+\.\d+/);
        const exec = info.supported_commands.find((c) => c.name === "guest-exec");
        assert.equal(exec?.enabled, true, "guest-exec is enabled");
        const os = await vm.agent.osInfo();
        assert.equal(os.id, "qmpkit-tiny");
        assert.equal(os["kernel-release"], (guest!.manifest.kernel as { release: string }).release);
      });

      await t.step("exec /bin/uname -r", async () => {
        const r = await vm.agent.exec("/bin/uname", ["-r"], { timeout: "20s" });
        assert.equal(r.exitCode, 0);
        assert.equal(r.stdout, `${(guest!.manifest.kernel as { release: string }).release}\n`);
        const sh = await vm.agent.exec("/bin/sh", ["-c", "cat; echo oops >&2; exit 3"], {
          input: "in",
          timeout: "20s",
        });
        assert.deepEqual([sh.exitCode, sh.stdout, sh.stderr], [3, "in", "oops\n"]);
      });

      await t.step("writeFile, readFile (and the guest sees the file)", async () => {
        const text = "written by the host\nline 2 ü\n";
        await vm.agent.writeFile("/tmp/qmpkit-agent.txt", text);
        assert.equal(await vm.agent.readTextFile("/tmp/qmpkit-agent.txt"), text);
        const cat = await vm.agent.exec("/bin/cat", ["/tmp/qmpkit-agent.txt"]);
        assert.equal(cat.stdout, text);
        assert.equal(
          (await vm.agent.readTextFile("/sys/block/vda/serial")).trim(),
          "qmpkit-frz",
        );
        await assert.rejects(vm.agent.readFile("/nonexistent/file"), (e: unknown) => {
          assert.ok(e instanceof AgentCommandError, String(e));
          assert.equal(e.class, "GenericError");
          return true;
        });
      });

      await t.step("fsfreeze freezes a mounted ext2 disk and thaws it", async () => {
        const setup = await vm.agent.exec("/bin/sh", [
          "-c",
          "mke2fs -q /dev/vda && mkdir -p /mnt/d && mount -t ext2 /dev/vda /mnt/d && " +
          "echo data > /mnt/d/f && sync",
        ], { timeout: "30s" });
        assert.equal(setup.exitCode, 0, setup.stderr);
        {
          await using frozen = await vm.agent.freeze({ timeout: "20s" });
          assert.equal(frozen.count, 1);
          assert.equal(await vm.agent.execute("guest-fsfreeze-status"), "frozen");
          // qemu-ga refuses most commands while frozen: a real guest-side effect.
          await assert.rejects(vm.agent.exec("/bin/true"), AgentCommandError);
        }
        assert.equal(await vm.agent.execute("guest-fsfreeze-status"), "thawed");
        const after = await vm.agent.exec("/bin/sh", ["-c", "echo more >> /mnt/d/f; cat /mnt/d/f"]);
        assert.equal(after.stdout, "data\nmore\n");
      });

      await t.step(
        "qemu-ga dying mid-command fails the command at once; it comes back",
        async () => {
          const t0 = performance.now();
          // The shell's parent is qemu-ga: it kills the agent while exec() polls for its status.
          const death = await within(
            vm.agent.exec("/bin/sh", ["-c", "sleep 1; kill -9 $PPID; sleep 30"], { timeout: "60s" })
              .then(() => undefined, (e: unknown) => e),
            20_000,
            "exec while qemu-ga dies",
          );
          const ms = performance.now() - t0;
          assert.ok(death instanceof AgentPortClosedError, `expected a closed port, got ${death}`);
          // It names the cause (QEMU's port event), not a timeout or a confused stale reply.
          assert.match(death.message, /VSERPORT_CHANGE/);
          assert.ok(ms < 15_000, `failed after ${Math.round(ms)} ms: reported, not waited out`);
          // The guest restarts qemu-ga a second later (as a service manager would).
          await within(vm.agent.waitReady({ timeout: "30s" }), 40_000, "waitReady after restart");
          assert.equal((await vm.agent.exec("/bin/echo", ["back"])).stdout, "back\n");
        },
      );

      await t.step("shutdown({ mode: 'powerdown' }) resolves on SHUTDOWN", async () => {
        await within(
          vm.agent.shutdown({ mode: "powerdown", qmp: vm.qmp, timeout: "60s" }),
          90_000,
          "agent shutdown",
        );
        const status = await vm.wait({ timeout: "30s" });
        assert.equal(status.code, 0);
        assert.match(vm.console.text, /QMPKIT-GUEST-POWEROFF/);
        await assert.rejects(vm.agent.ping(), QmpError); // closed with the VM, no hang
      });
    } finally {
      await vm.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("agent launch: vm.agent without agent: true is an AgentError saying how", async () => {
  const vm = await launch({ timeout: "20s" });
  try {
    assert.equal(vm.agentSocketPath, undefined);
    assert.throws(() => vm.agent, (e: unknown) => {
      assert.ok(e instanceof AgentError);
      assert.match(e.message, /agent: true/);
      return true;
    });
  } finally {
    await vm.shutdown();
  }
});

Deno.test("agent launch: a tiny guest built without qemu-ga is refused before QEMU starts", async () => {
  const cache = await Deno.makeTempDir({ prefix: "qmpkit-agent-cache-" });
  const before = Deno.env.get("QMPKIT_CACHE");
  try {
    await Deno.mkdir(join(cache, "guest"));
    await Deno.writeTextFile(join(cache, "guest", "guest.json"), '{"recipe":2,"agent":null}');
    await Deno.writeTextFile(join(cache, "guest", "vmlinuz"), "not a kernel");
    await Deno.writeTextFile(join(cache, "guest", "initramfs.cpio.gz"), "not an initrd");
    Deno.env.set("QMPKIT_CACHE", cache);
    await assert.rejects(launch({ guest: "tiny", agent: true }), (e: unknown) => {
      assert.ok(e instanceof LaunchError);
      assert.match(e.message, /without the guest agent.*qemu-guest-agent.*deno task guest/);
      return true;
    });
  } finally {
    if (before === undefined) Deno.env.delete("QMPKIT_CACHE");
    else Deno.env.set("QMPKIT_CACHE", before);
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("agent launch: the guest builder reads ldd's output (libraries, loader, no vDSO)", () => {
  const out = [
    "\tlinux-vdso.so.1 (0x00007ffd)",
    "\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f10977db000)",
    "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1097511000)",
    "\t/lib64/ld-linux-x86-64.so.2 (0x00007f1097a62000)",
  ].join("\n");
  assert.deepEqual(parseLdd(out, "qemu-ga"), [
    "/lib/x86_64-linux-gnu/libglib-2.0.so.0",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/ld-linux-x86-64.so.2",
  ]);
  assert.throws(
    () => parseLdd("\tlibnuma.so.1 => not found\n", "qemu-ga"),
    /qemu-ga needs libnuma\.so\.1, which ldd cannot find/,
  );
});
