/**
 * Block devices on a running tiny guest: a qcow2 image (made with qemu-img in
 * the playbook's temp dir) attached with blockdev-add, hot-plugged as a
 * virtio-blk disk the guest sees, backed up to a second qcow2 node with a
 * blockdev-backup job, then hot-unplugged (the guest ejects it via PCIe
 * hotplug) → DEVICE_DELETED. The guest's view is read through its agent (qemu-ga).
 *
 * @module
 */
import { playbook } from "../lib/runner/playbook.ts";

async function qemuImg(...args: string[]): Promise<void> {
  const out = await new Deno.Command("qemu-img", { args, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`qemu-img ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

export default playbook({
  name: "block: blockdev-add, hot-plug, backup job, unplug",
  description: "qcow2 nodes, virtio-blk hot-plug on a PCIe root port, blockdev-backup, device_del",
  // q35 root ports are hot-pluggable; the tiny guest's kernel handles PCIe hotplug.
  vm: {
    guest: "tiny",
    agent: true,
    args: ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"],
  },
  timeout: "2m",
}, async (t) => {
  const disk = `${t.tempDir}/disk.qcow2`;
  const backup = `${t.tempDir}/backup.qcow2`;

  await t.step("guest agent answers", async () => {
    await t.agent.waitReady({ timeout: "90s", signal: t.signal });
  });

  await t.step("attach qcow2 nodes", async () => {
    await qemuImg("create", "-q", "-f", "qcow2", disk, "32M");
    await qemuImg("create", "-q", "-f", "qcow2", backup, "32M");
    await t.qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "disk0",
      file: { driver: "file", filename: disk },
    });
    t.cleanup(() => t.qmp.execute("blockdev-del", { "node-name": "disk0" }));
    await t.qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "backup0",
      file: { driver: "file", filename: backup },
    });
    t.cleanup(() => t.qmp.execute("blockdev-del", { "node-name": "backup0" }));
    const nodes = await t.qmp.execute("query-named-block-nodes", { flat: true });
    t.expect(nodes.map((n) => n["node-name"])).toContain("disk0");
    t.expect(nodes).toContain({ "node-name": "backup0", drv: "qcow2" });
  });

  await t.step("hot-plug virtio-blk", async () => {
    await t.qmp.execute("device_add", {
      driver: "virtio-blk-pci",
      id: "disk1",
      drive: "disk0",
      bus: "rp1",
      serial: "qmpkit-disk1",
    });
    t.cleanup(async () => {
      // Still plugged (an earlier step failed): unplug, so blockdev-del can free the node.
      const plugged = await t.qmp.execute("qom-list", { path: "/machine/peripheral" });
      if (!plugged.some((p) => p.name === "disk1")) return;
      await t.expectEvent("DEVICE_DELETED", () => t.qmp.execute("device_del", { id: "disk1" }), {
        where: { device: "disk1" },
        timeout: "20s",
      });
    });
    await t.step("guest sees the disk", async () => {
      // PCIe hotplug takes the guest a moment: read until the disk's serial shows up.
      await t.eventually(async () => {
        const serial = await t.agent.readTextFile("/sys/block/vda/serial", { signal: t.signal });
        t.expect(serial.trim()).toBe("qmpkit-disk1");
      }, { timeout: "20s", interval: "200ms" });
      const size = await t.agent.exec("/bin/cat", ["/sys/block/vda/size"], { signal: t.signal });
      t.expect(size).toMatchObject({ exitCode: 0, stdout: `${(32 * 1024 * 1024) / 512}\n` });
    });
  });

  await t.step("backup", async () => {
    await t.step("job concludes", async () => {
      const concluded = await t.expectEvent(
        "JOB_STATUS_CHANGE",
        () =>
          t.qmp.execute("blockdev-backup", {
            "job-id": "bk0",
            device: "disk0",
            target: "backup0",
            sync: "full",
            "auto-dismiss": false,
          }),
        { where: { id: "bk0", status: "concluded" }, timeout: "20s" },
      );
      t.expect(concluded.data).toEqual({ id: "bk0", status: "concluded" });
      const jobs = await t.qmp.execute("query-jobs");
      t.expect(jobs).toContain({ id: "bk0", type: "backup", status: "concluded" });
      t.expect(jobs.find((j) => j.id === "bk0")?.error).not.toBeDefined();
    });
    await t.step("job-dismiss", async () => {
      await t.expectEvent("JOB_STATUS_CHANGE", () => t.qmp.execute("job-dismiss", { id: "bk0" }), {
        where: { id: "bk0", status: "null" },
      });
      t.expect(await t.qmp.execute("query-jobs")).toHaveLength(0);
    });
  });

  await t.step("unplug → DEVICE_DELETED", async () => {
    const deleted = await t.expectEvent(
      "DEVICE_DELETED",
      () => t.qmp.execute("device_del", { id: "disk1" }),
      { where: { device: "disk1" }, timeout: "20s" },
    );
    t.expect(deleted.data.path).toBe("/machine/peripheral/disk1");
    await t.expectError(() => t.qmp.execute("device_del", { id: "disk1" }), {
      class: "DeviceNotFound",
    });
  });
});
