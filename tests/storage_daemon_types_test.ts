// Compile-time tests of the storage daemon's typed client: `QmpClient<StorageDaemonCommands>`
// (what launchStorageDaemon() returns) accepts the daemon's commands with their argument and
// return types, and a command only the system emulator has fails `deno check`; the default
// `QmpClient` is unchanged. Every `@ts-expect-error` line must be a type error (deno test
// type-checks this file; `deno task check` too).

import assert from "node:assert/strict";
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

Deno.test("storage daemon types: compile-time checks (see typeTests)", () => {
  assert.equal(typeof typeTests, "function");
  const names: StorageDaemonCommandName[] = ["blockdev-add", "block-export-add", "quit"];
  assert.equal(names.length, 3);
});
