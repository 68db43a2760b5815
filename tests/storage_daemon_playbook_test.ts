/**
 * Playbooks against qemu-storage-daemon (`vm: { storageDaemon: true }`): the
 * bundled NBD example passes; `t.daemon` is the running daemon and it is
 * stopped (quit) when the playbook ends; `t.vm` in a daemon playbook and
 * `t.daemon` in a VM playbook fail the step with a PlaybookUsageError saying
 * what to use instead; a daemon that cannot start fails the playbook as a
 * LaunchError. (t.qmp's daemon typing: tests/storage_daemon_types_test.ts.)
 */
import assert from "node:assert/strict";
import { playbook, runPlaybook } from "../mod.ts";
import nbdExport from "../examples/nbd_export.playbook.ts";

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

Deno.test("examples/nbd_export.playbook.ts passes against the real daemon", async () => {
  const r = await runPlaybook(nbdExport, { file: "examples/nbd_export.playbook.ts" });
  assert.equal(r.status, "passed", JSON.stringify(r.failure ?? r.steps, null, 2));
  assert.deepEqual(r.steps.map((s) => s.status), Array(5).fill("passed"));
});

Deno.test("a daemon playbook: t.daemon runs, stopped at the end; t.vm is a usage error", async () => {
  let pid = 0;
  let dir = "";
  const pb = playbook({ name: "daemon", vm: { storageDaemon: true } }, async (t) => {
    await t.step("daemon", async () => {
      pid = t.daemon.pid;
      dir = t.daemon.dir;
      assert.ok(alive(pid));
      const v = await t.qmp.execute("query-version");
      t.expect(v.qemu.major).toBe(7);
    });
    await t.step("t.vm", () => t.vm);
  });
  const r = await runPlaybook(pb);
  assert.equal(r.status, "failed");
  assert.deepEqual(r.steps.map((s) => s.status), ["passed", "failed"]);
  const f = r.steps[1].failure!;
  assert.equal(f.name, "PlaybookUsageError");
  assert.match(
    f.message,
    /t\.vm is not available: .*runs qemu-storage-daemon.*use t\.qmp and t\.daemon/,
  );
  assert.equal(alive(pid), false, "the daemon was stopped");
  assert.equal(await Deno.stat(dir).then(() => true, () => false), false, "its dir removed");
});

Deno.test("a daemon that dies mid-playbook: the failure says how it ended", async () => {
  const pb = playbook({ name: "dies", vm: { storageDaemon: true } }, async (t) => {
    await t.step("kill it, then ask it", async () => {
      Deno.kill(t.daemon.pid, "SIGKILL");
      await t.daemon.exited;
      await t.qmp.execute("query-version");
    });
  });
  const r = await runPlaybook(pb);
  assert.equal(r.status, "failed");
  assert.match(
    r.steps[0].failure?.qemuExit ?? "",
    /^killed by SIGKILL/,
    JSON.stringify(r.steps[0]),
  );
});

Deno.test("a VM playbook: t.daemon is a usage error naming vm: { storageDaemon: true }", async () => {
  const pb = playbook({ name: "vm", vm: { machine: "none" } }, async (t) => {
    await t.step("t.daemon", () => t.daemon);
  });
  const r = await runPlaybook(pb);
  assert.equal(r.status, "failed");
  assert.match(r.steps[0].failure!.message, /t\.daemon is not available: .*storageDaemon: true/);
});

Deno.test("a daemon that cannot start fails the playbook with its LaunchError", async () => {
  const pb = playbook({
    name: "bad daemon",
    vm: { storageDaemon: true, args: ["--blockdev", "driver=nope,node-name=x"] },
  }, () => {});
  const r = await runPlaybook(pb);
  assert.equal(r.status, "failed");
  assert.equal(r.failure?.name, "LaunchError");
  assert.match(r.failure!.message, /exited before its QMP monitor was ready/);
});
