/**
 * Internal snapshots with the snapshot-save / snapshot-load jobs: the VM
 * state (RAM, devices) goes into a qcow2 node; loading it back rewinds the
 * running tiny guest, which the playbook proves with a file in the guest's
 * RAM-backed root, written and read through the guest agent (qemu-ga, itself
 * rewound with the guest).
 *
 * @module
 */
import { playbook } from "../lib/runner/playbook.ts";

export default playbook({
  name: "snapshot: snapshot-save and snapshot-load jobs",
  description: "qcow2 vmstate node, JOB_STATUS_CHANGE, STOP/RESUME, guest state rewound",
  vm: { guest: "tiny", agent: true },
  timeout: "2m",
}, async (t) => {
  const image = `${t.tempDir}/state.qcow2`;
  /** The number in the guest's /tmp/mark (its root is in RAM, so it is part of the VM state). */
  const guestMark = async () => (await t.agent.readTextFile("/tmp/mark")).trim();

  await t.step("guest agent answers", async () => {
    await t.agent.waitReady({ timeout: "90s", signal: t.signal });
  });

  await t.step("qcow2 node for the VM state", async () => {
    const made = await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", image, "256M"],
      stderr: "piped",
    }).output();
    t.expect(made.success, new TextDecoder().decode(made.stderr)).toBe(true);
    await t.qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "state0",
      file: { driver: "file", filename: image },
    });
    t.cleanup(() => t.qmp.execute("blockdev-del", { "node-name": "state0" }));
  });

  await t.step("snapshot-save", async () => {
    await t.agent.writeFile("/tmp/mark", "42\n");
    t.expect(await guestMark()).toBe("42");
    const done = await t.expectEvent(
      "JOB_STATUS_CHANGE",
      () =>
        t.qmp.execute("snapshot-save", {
          "job-id": "save0",
          tag: "snap0",
          vmstate: "state0",
          devices: ["state0"],
        }),
      { where: { id: "save0", status: "concluded" }, timeout: "30s" },
    );
    t.expect(done.data.status).toBe("concluded");
    const nodes = await t.qmp.execute("query-named-block-nodes", { flat: true });
    const node = nodes.find((n) => n["node-name"] === "state0");
    t.expect(node?.image.snapshots).toContain({ name: "snap0" });
    t.expect(node?.image.snapshots?.[0]?.["vm-state-size"]).toBeGreaterThan(0);
    t.expect((await t.qmp.execute("query-status")).status).toBe("running");
  });

  await t.step("guest changes its state", async () => {
    await t.agent.writeFile("/tmp/mark", "55\n");
    t.expect(await guestMark()).toBe("55");
  });

  await t.step("snapshot-load rewinds the guest", async () => {
    // The VM stops, its state is loaded, and it resumes (QEMU 7.2 sends no RESET here).
    const resumed = t.qmp.waitEvent("RESUME", { timeout: "30s", signal: t.signal });
    const done = await t.expectEvent(
      "JOB_STATUS_CHANGE",
      () =>
        t.qmp.execute("snapshot-load", {
          "job-id": "load0",
          tag: "snap0",
          vmstate: "state0",
          devices: ["state0"],
        }),
      { where: { id: "load0", status: "concluded" }, timeout: "30s" },
    );
    t.expect(done.data).toEqual({ id: "load0", status: "concluded" });
    await resumed;
    t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "running" });
    t.expect(await guestMark()).toBe("42");
  });
});
