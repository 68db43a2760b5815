/**
 * A playbook whose QEMU dies in the middle of a step (SIGSTOP so a command is
 * pending, then SIGKILL). Run as a subprocess by qemu_kill_test.ts; not an
 * example. QMPKIT_FAULT_OUT names a directory for what the test checks.
 *
 * @module
 */
import { playbook } from "../../lib/runner/playbook.ts";

export default playbook({
  name: "fault: QEMU killed mid-step",
  vm: { machine: "none" },
  timeout: "60s",
}, async (t) => {
  const out = Deno.env.get("QMPKIT_FAULT_OUT");
  if (!out) throw new Error("QMPKIT_FAULT_OUT is not set");
  await Deno.writeTextFile(
    `${out}/vm.json`,
    JSON.stringify({ pid: t.vm.pid, dir: t.vm.dir, tempDir: t.tempDir }),
  );
  t.cleanup(() => Deno.writeTextFile(`${out}/cleanup-ran`, String(t.vm.running)));

  await t.step("healthy step", async () => {
    t.expect((await t.qmp.execute("query-status")).status).toBe("running");
  });

  await t.step("query-status while QEMU is killed", async () => {
    Deno.kill(t.vm.pid, "SIGSTOP"); // frozen: the command stays pending
    const pending = t.qmp.execute("query-status");
    await new Promise((r) => setTimeout(r, 200));
    Deno.kill(t.vm.pid, "SIGKILL");
    await pending;
  });

  await t.step("never runs", () => {
    throw new Error("a step after the failure ran");
  });
});
