/**
 * `t.agent` in playbooks: a playbook whose VM is `{ guest: "tiny", agent: true }` runs a program
 * in the guest through the real qemu-ga, then fails so `--keep-vm` keeps the VM with its agent
 * socket free for another client (one boot), and `t.agent` without an agent fails the
 * step with a PlaybookUsageError that says what to add (no boot: a `-machine none` VM).
 * The boot test is ignored when the tiny guest is not built or has no agent.
 *
 * Permissions: --allow-read --allow-write --allow-env --allow-run (qemu-system-x86_64, setpriv).
 */
import assert from "node:assert/strict";
import { playbook } from "../lib/runner/playbook.ts";
import { runPlaybook } from "../lib/runner/engine.ts";
import { listPlaybook } from "../lib/runner/listing.ts";
import { connectAgent } from "../lib/agent/client.ts";
import { findAgentGuest } from "./helpers/guest.ts";

const { guest, skip } = await findAgentGuest("tests/guest_agent_playbook_test.ts");

Deno.test({
  name: "playbook: t.agent runs a program in the tiny guest; --keep-vm frees the agent socket",
  ignore: skip !== "",
  async fn() {
    const release = (guest!.manifest.kernel as { release: string }).release;
    const pb = playbook({
      name: "agent uname",
      vm: { guest: "tiny", agent: true, accel: "tcg" },
      timeout: "3m",
    }, async (t) => {
      await t.step("agent answers", () => t.agent.waitReady({ timeout: "90s", signal: t.signal }));
      await t.step("uname -r", async () => {
        const r = await t.agent.exec("/bin/uname", ["-r"]);
        t.expect(r).toMatchObject({ exitCode: 0, stdout: `${release}\n` });
      });
      await t.step("fails on purpose, so --keep-vm keeps the VM", () => {
        t.expect(1).toBe(2);
      });
    });
    const result = await runPlaybook(pb, { keepVm: true });
    const [kept] = result.kept;
    try {
      assert.deepEqual(result.steps.map((s) => [s.name, s.status]), [
        ["agent answers", "passed"],
        ["uname -r", "passed"],
        ["fails on purpose, so --keep-vm keeps the VM", "failed"],
      ]);
      // The kept VM's agent is free for someone else (e.g. `qmp agent` from a shell).
      assert.ok(kept?.agentSocketPath, JSON.stringify(result.kept));
      await using other = await connectAgent(`unix:${kept.agentSocketPath}`, { timeout: "20s" });
      assert.equal((await other.exec("/bin/echo", ["still here"])).stdout, "still here\n");
    } finally {
      await Promise.all(result.kept.map((k) => k.machine?.kill()));
    }
  },
});

Deno.test("playbook: t.agent without agent: true fails the step saying what to add", async () => {
  const pb = playbook({ name: "no agent", vm: { machine: "none" } }, async (t) => {
    await t.step("uses t.agent", () => t.agent.ping());
  });
  const result = await runPlaybook(pb);
  assert.equal(result.status, "failed");
  const failure = result.steps[0]?.failure;
  assert.equal(failure?.name, "PlaybookUsageError");
  assert.match(failure!.message, /without an agent; add agent: true to its vm/);
});

Deno.test("playbook: --list stops at t.agent outside a step", async () => {
  const pb = playbook({ name: "lists", vm: { guest: "tiny", agent: true } }, async (t) => {
    await t.step("first", () => {});
    await t.agent.ping();
    await t.step("never listed", () => {});
  });
  const listing = await listPlaybook(pb);
  assert.deepEqual(listing.steps.map((s) => s.name), ["first"]);
  assert.equal(listing.complete, false);
  assert.match(listing.note ?? "", /uses t\.agent/);
});
