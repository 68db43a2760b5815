/**
 * Hot-plug and unplug on a running tiny guest: a user-mode network backend
 * with a virtio-net NIC (the guest sees its MAC address), and a USB tablet on
 * an xHCI controller (it shows up as an absolute pointer). Every removal ends
 * with DEVICE_DELETED. The guest's view of the NIC comes from its agent (qemu-ga).
 *
 * @module
 */
import { playbook } from "../lib/runner/playbook.ts";

const MAC = "52:54:00:12:34:56";

export default playbook({
  name: "hotplug: virtio-net NIC and USB tablet",
  description: "netdev_add user + device_add virtio-net-pci, usb-tablet on qemu-xhci, device_del",
  vm: {
    guest: "tiny",
    agent: true,
    args: ["-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "qemu-xhci,id=xhci"],
  },
  timeout: "2m",
}, async (t) => {
  await t.step("guest agent answers", async () => {
    await t.agent.waitReady({ timeout: "90s", signal: t.signal });
  });

  await t.step("NIC", async () => {
    await t.step("netdev_add user + device_add virtio-net-pci", async () => {
      await t.qmp.execute("netdev_add", { type: "user", id: "net0" });
      await t.qmp.execute("device_add", {
        driver: "virtio-net-pci",
        id: "nic0",
        netdev: "net0",
        mac: MAC,
        bus: "rp1",
      });
      const [filter] = await t.qmp.execute("query-rx-filter", { name: "nic0" });
      t.expect(filter).toMatchObject({ name: "nic0", "main-mac": MAC });
    });
    await t.step("guest sees the NIC", async () => {
      await t.eventually(async () => {
        const nics = await t.agent.networkInterfaces({ signal: t.signal });
        t.expect(nics).toContain({ "hardware-address": MAC });
      }, { timeout: "20s", interval: "200ms" });
    });
    await t.step("device_del → DEVICE_DELETED, netdev_del", async () => {
      const ev = await t.expectEvent(
        "DEVICE_DELETED",
        () => t.qmp.execute("device_del", { id: "nic0" }),
        {
          where: { device: "nic0" },
          timeout: "20s",
        },
      );
      t.expect(ev.data).toEqual({ device: "nic0", path: "/machine/peripheral/nic0" });
      await t.qmp.execute("netdev_del", { id: "net0" });
      await t.expectError(() => t.qmp.execute("query-rx-filter", { name: "nic0" }));
    });
  });

  await t.step("USB tablet", async () => {
    await t.step("device_add usb-tablet", async () => {
      await t.qmp.execute("device_add", { driver: "usb-tablet", id: "tab0", bus: "xhci.0" });
      t.expect(await t.qmp.execute("query-mice")).toContain({
        name: "QEMU HID Tablet",
        absolute: true,
      });
    });
    await t.step("device_del → DEVICE_DELETED", async () => {
      const ev = await t.expectEvent(
        "DEVICE_DELETED",
        () => t.qmp.execute("device_del", { id: "tab0" }),
        {
          where: { device: "tab0" },
        },
      );
      t.expect(ev.data.path).toBe("/machine/peripheral/tab0");
      t.expect(await t.qmp.execute("query-mice")).not.toContain({ name: "QEMU HID Tablet" });
      await t.expectError(() => t.qmp.execute("device_del", { id: "tab0" }), {
        class: "DeviceNotFound",
        message: "tab0",
      });
    });
  });
});
