/**
 * An ad-hoc script: launch a throwaway VM, hot-plug a USB tablet, unplug it,
 * and wait for QEMU to confirm, with typed commands and events throughout.
 *
 *   deno run --allow-read --allow-write --allow-net --allow-run --allow-env examples/hotplug_script.ts
 *
 * @module
 */
import { launch, QmpCommandError } from "../mod.ts";

await using vm = await launch({
  machine: "pc",
  paused: true,
  memory: 64,
  args: ["-device", "qemu-xhci,id=xhci"],
});
console.log(`QEMU pid ${vm.pid} (${vm.accel}), QMP at ${vm.socketPath}`);

await vm.qmp.execute("device_add", { driver: "usb-tablet", id: "tab0", bus: "xhci.0" });
console.log(
  "plugged:",
  await vm.qmp.execute("qom-get", { path: "/machine/peripheral/tab0", property: "type" }),
);

// Arm the wait before the action: QEMU may send the event before device_del's reply.
const deleted = vm.qmp.waitEvent("DEVICE_DELETED", { where: { device: "tab0" }, timeout: "5s" });
await vm.qmp.execute("device_del", { id: "tab0" });
console.log("unplugged:", (await deleted).data.path);

try {
  await vm.qmp.execute("device_del", { id: "tab0" });
} catch (e) {
  if (!(e instanceof QmpCommandError) || e.class !== "DeviceNotFound") throw e;
  console.log("second device_del:", e.class);
}
// `await using` shuts the VM down here: quit, then SIGTERM/SIGKILL if it must.
