/**
 * Migration to a file and back into a second VM: the running tiny guest is
 * migrated with `exec:cat > FILE` (MIGRATION events: setup → active →
 * completed, the source ends in postmigrate), then a second VM started with
 * `-incoming "exec:cat FILE"` and `-S` loads it, resumes on `cont`, and the
 * guest carries on with its state (a file in its RAM-backed root), read through
 * the guest agent (qemu-ga migrates with the guest; both VMs have the agent port).
 *
 * @module
 */
import type { MigrationStatus } from "../lib/qapi/types.ts";
import { playbook } from "../lib/runner/playbook.ts";

export default playbook({
  name: "migration: to a file, then into a second VM",
  description: "migrate exec:, MIGRATION events, postmigrate, -incoming exec:, cont on the target",
  vm: { guest: "tiny", agent: true },
  timeout: "2m",
}, async (t) => {
  const stream = `${t.tempDir}/vm.migration`;

  await t.step("source boots and keeps some state", async () => {
    await t.agent.waitReady({ timeout: "90s", signal: t.signal });
    await t.agent.writeFile("/tmp/mark", "42\n");
    t.expect(await t.agent.readTextFile("/tmp/mark")).toBe("42\n");
  });

  await t.step("migrate to a file", async () => {
    await t.qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "events", state: true }],
    });
    using statuses = t.qmp.listen({ names: ["MIGRATION"] });
    const stopped = t.qmp.waitEvent("STOP", { timeout: "30s", signal: t.signal });
    await t.expectEvent(
      "MIGRATION",
      () => t.qmp.execute("migrate", { uri: `exec:cat > ${stream}` }),
      {
        where: { status: "completed" },
        timeout: "60s",
      },
    );
    await stopped;
    const seen: MigrationStatus[] = statuses.drain().map((e) => e.data.status);
    t.expect(seen).toEqual(["setup", "active", "completed"]);
    t.expect(await t.qmp.execute("query-migrate")).toMatchObject({ status: "completed" });
    t.expect(await t.qmp.execute("query-status")).toMatchObject({
      status: "postmigrate",
      running: false,
    });
    t.expect((await Deno.stat(stream)).size).toBeGreaterThan(0);
  });

  await t.step("a second VM loads it and runs on", async () => {
    const target = await t.launch({
      label: "target",
      guest: "tiny",
      agent: true, // the same devices as the source: its agent port migrates too
      paused: true,
      args: ["-incoming", `exec:cat ${stream}`],
    });
    // The incoming stream may be fully read before we connect: poll, don't wait for events.
    await t.eventually(async () => {
      t.expect(await target.qmp.execute("query-migrate")).toMatchObject({ status: "completed" });
      t.expect(await target.qmp.execute("query-status")).toMatchObject({ status: "paused" });
    }, { timeout: "30s", interval: "200ms", message: "the incoming migration completes" });
    await t.expectEvent("RESUME", () => target.qmp.execute("cont"), { qmp: target.qmp });
    t.expect(await target.qmp.execute("query-status")).toMatchObject({ status: "running" });
    // Same guest, same RAM: the file written before the migration is still there.
    t.expect(await target.agent.readTextFile("/tmp/mark", { timeout: "30s" })).toBe("42\n");
  });
});
