// Compile-time tests of the storage daemon's typed client: `QmpClient<StorageDaemonCommands>`
// (what launchStorageDaemon() returns) accepts the daemon's commands with their argument and
// return types, and a command only the system emulator has fails `deno check`; the default
// `QmpClient` is unchanged. Every `@ts-expect-error` line must be a type error (deno test
// type-checks this file; `deno task check` too).

import assert from "node:assert/strict";
import { playbook } from "../mod.ts";
import type {
  QmpClient,
  StorageDaemon,
  StorageDaemonCommandName,
  StorageDaemonCommands,
} from "../mod.ts";

/** Never called: only compiled. */
async function typeTests(qsd: StorageDaemon, vm: QmpClient): Promise<void> {
  const daemon: QmpClient<StorageDaemonCommands> = qsd.qmp;
  const v = await daemon.execute("query-version");
  const major: number | bigint = v.qemu.major;
  void major;
  await daemon.execute("blockdev-add", { driver: "null-co", "node-name": "n0" });
  await daemon.execute("nbd-server-start", { addr: { type: "unix", data: { path: "/x" } } });
  const exports = await daemon.execute("query-block-exports");
  const id: string = exports[0].id;
  void id;
  await daemon.execute("quit");

  // @ts-expect-error query-status is a VM command: the daemon has no run state
  await daemon.execute("query-status");
  // @ts-expect-error device_add: no devices without a VM
  await daemon.execute("device_add", { driver: "virtio-blk-pci" });
  // @ts-expect-error system_powerdown: no guest
  await daemon.execute("system_powerdown");
  // @ts-expect-error a daemon command with a wrong argument type
  await daemon.execute("block-export-del", { id: 42 });
  // @ts-expect-error required argument missing
  await daemon.execute("block-export-add", { type: "nbd", id: "e0" });

  // The default client (a VM) still has them, and the daemon's commands too.
  const status = await vm.execute("query-status");
  const running: boolean = status.running;
  void running;
  await vm.execute("block-export-del", { id: "e0" });
  // executeRaw stays the untyped escape hatch on both.
  await daemon.executeRaw("query-status");
}

// A playbook with vm: { storageDaemon: true } gets t.qmp typed for the daemon, in steps too.
const daemonPlaybook = playbook({ name: "typed", vm: { storageDaemon: true } }, async (t) => {
  await t.qmp.execute("query-block-exports");
  // @ts-expect-error the daemon playbook's t.qmp has no query-status
  await t.qmp.execute("query-status");
  await t.step("nested", async (t2) => {
    // @ts-expect-error nor in a step's t
    await t2.qmp.execute("query-status");
  });
});

// A VM playbook is unchanged.
const vmPlaybook = playbook({ name: "vm", vm: { machine: "none" } }, async (t) => {
  await t.qmp.execute("query-status");
  await t.step("nested", (t2) => t2.qmp.execute("query-status"));
});

Deno.test("storage daemon types: compile-time checks (see typeTests)", () => {
  assert.equal(typeof typeTests, "function");
  assert.equal(daemonPlaybook.meta.name, "typed");
  assert.equal(vmPlaybook.meta.name, "vm");
  const names: StorageDaemonCommandName[] = ["blockdev-add", "block-export-add", "quit"];
  assert.equal(names.length, 3);
});
