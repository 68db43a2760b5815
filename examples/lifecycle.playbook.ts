/**
 * Lifecycle of the tiny guest: boot to its ready marker, pause and resume,
 * reset (and boot again), then power off through ACPI.
 *
 *   deno task play lifecycle                      # launches the tiny guest (deno task guest)
 *   deno task play lifecycle --qmp unix:/run/vm1/qmp.sock   # any running VM: the console
 *                                                 # and power-off steps are skipped
 *
 * @module
 */
import { playbook } from "../lib/runner/playbook.ts";

export default playbook({
  name: "lifecycle: boot, pause, reset, power off",
  description: "tiny guest: ready marker, stop/cont, system_reset → RESET, system_powerdown",
  vm: { guest: "tiny", memory: 128 },
  timeout: "3m",
}, async (t) => {
  const noConsole = t.attached && "attached with --qmp: no serial console";

  await t.step("boots to ready", async () => {
    await t.vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "90s", signal: t.signal });
  }, { skip: noConsole });

  await t.step("pause and resume", async () => {
    await t.expectEvent("STOP", () => t.qmp.execute("stop"));
    t.expect(await t.qmp.execute("query-status")).toMatchObject({
      status: "paused",
      running: false,
    });
    await t.expectEvent("RESUME", () => t.qmp.execute("cont"), { timeout: "5s" });
    t.expect((await t.qmp.execute("query-status")).status).toBe("running");
  });

  await t.step("system_reset → RESET, guest boots again", async () => {
    const reset = await t.expectEvent("RESET", () => t.qmp.execute("system_reset"), {
      where: { guest: false },
    });
    t.expect(reset.data).toEqual({ guest: false, reason: "host-qmp-system-reset" });
    if (!t.attached) {
      await t.vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "90s", signal: t.signal });
    }
  });

  await t.step("system_powerdown → SHUTDOWN (guest)", async () => {
    const shutdown = await t.expectEvent("SHUTDOWN", () => t.qmp.execute("system_powerdown"), {
      where: { guest: true },
      timeout: "60s",
    });
    t.expect(shutdown.data.reason).toBe("guest-shutdown");
    const status = await t.vm.wait({ timeout: "10s" });
    t.expect(status.code).toBe(0);
  }, { skip: t.attached && "would power off the VM you attached to" });
});
