/**
 * The agent client's fault cases against the REAL qemu-ga inside the tiny guest (one boot):
 * an agent that is not running yet (timeout with the hint), leftovers of an earlier client on the
 * port (resync), a command printing 100 MB (bounded, truncated, reported; the agent survives in
 * the default 256 MiB), an exec that never exits (timeout; the process is left to the guest).
 * Ignored when the tiny guest is not built with the agent (deno task guest).
 */
import assert from "node:assert/strict";
import { connectAgent } from "../lib/agent/client.ts";
import { AgentExecTimeoutError } from "../lib/agent/errors.ts";
import { TimeoutError } from "../lib/errors.ts";
import { launch } from "../lib/machine.ts";
import { within } from "./helpers/qemu.ts";
import { findAgentGuest } from "./helpers/guest.ts";

const { skip } = await findAgentGuest("tests/agent_guest_faults_test.ts");
const ignore = skip !== "";

Deno.test({
  name: "agent faults in the tiny guest: not running yet, leftovers, 100 MB output, endless exec",
  ignore,
  async fn(t) {
    const vm = await launch({ guest: "tiny", agent: true, accel: "tcg", timeout: "60s" });
    try {
      const socket = vm.agentSocketPath!;
      await t.step("before qemu-ga starts: a timeout that asks whether it runs", async () => {
        // The guest is still booting: the chardev socket accepts, nobody answers.
        const err = await within(
          connectAgent(`unix:${socket}`, { timeout: 1000 }).catch((e) => e),
          10_000,
          "connect",
        );
        assert.ok(err instanceof TimeoutError, String(err));
        assert.match(err.message, /is qemu-ga started in the guest\?/);
      });

      await t.step("an earlier client's half request and stale sync are flushed", async () => {
        const raw = await Deno.connect({ transport: "unix", path: socket });
        await raw.write(new TextEncoder().encode('{"execute": "guest-info", "argu'));
        raw.close();
        await within(vm.agent.waitReady({ timeout: "90s" }), 120_000, "waitReady");
        const info = await vm.agent.info();
        assert.ok(info.supported_commands.some((c) => c.name === "guest-exec"));
      });

      await t.step(
        "a command printing 100 MB: bounded, reported truncated, agent alive",
        async () => {
          const r = await within(
            vm.agent.exec("/bin/sh", ["-c", "head -c 100000000 /dev/zero; echo done >&2"], {
              timeout: "150s",
            }),
            180_000,
            "100 MB exec",
          );
          assert.equal(r.exitCode, 0);
          assert.equal(r.stdoutTruncated, true);
          assert.equal(r.stdoutBytes.length, 16 * 1024 * 1024, "qemu-ga's cap");
          assert.equal(r.stderr, "done\n");
          await vm.agent.ping();
        },
      );

      await t.step(
        "an exec that never exits: timeout, pid, left running, then killed",
        async () => {
          const err = await within(
            vm.agent.exec("/bin/sleep", ["1000"], { timeout: "2s" }).catch((e) => e),
            30_000,
            "endless exec",
          );
          assert.ok(err instanceof AgentExecTimeoutError, String(err));
          assert.match(err.message, /left running in the guest/);
          const ps = await vm.agent.exec("/bin/sh", ["-c", `kill -0 ${err.pid} && echo alive`]);
          assert.equal(ps.stdout, "alive\n");
          assert.equal((await vm.agent.exec("/bin/kill", [String(err.pid)])).exitCode, 0);
        },
      );
    } finally {
      await vm.shutdown();
    }
  },
});
