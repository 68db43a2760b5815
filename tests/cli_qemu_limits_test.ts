/**
 * The `qmp` CLI against real QEMU where QEMU decides: which HMP outputs are
 * errors (HMP prints them as text in a successful reply), and how deep QEMU's
 * JSON parser lets arguments nest.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { startQemuForClients } from "./helpers/qemu.ts";
import { qmp, show } from "./helpers/cli.ts";

Deno.test("qmp shell -H batch: HMP errors without an Error: prefix exit 1", async () => {
  await using qemu = await startQemuForClients({ machine: "pc", paused: true });
  const bad = await qmp(["shell", "-H", qemu.address], { stdin: "cpu 5\n" });
  assertEquals(bad.code, 1, show(bad));
  assertEquals(bad.stderr, "qmp shell: line 1: invalid CPU index\n");
  assertEquals(bad.stdout, "");

  // The argument parser's complaints ("Try help ...") are errors too; --keep-going goes on.
  const all = await qmp(["shell", "-H", "--keep-going", qemu.address], {
    stdin: "cpu x\ncpu 0\nstop 1\ninfo status\n",
  });
  assertEquals(all.code, 1, show(all));
  const errors = all.stderr.trimEnd().split("\n").filter((l) => l.startsWith("qmp shell: line"));
  assertEquals(errors, [
    "qmp shell: line 1: invalid char 'x' in expression",
    "qmp shell: line 3: stop|s: extraneous characters at the end of line",
  ]);
  assertEquals(all.stdout, "VM status: paused (prelaunch)\n");

  const ok = await qmp(["shell", "-H", qemu.address], { stdin: "cpu 0\ninfo status\n" });
  assertEquals(ok.code, 0, show(ok));

  const exec = await qmp(["exec", qemu.address, "--hmp", "cpu 5"]);
  assertEquals(exec.code, 1, show(exec));
  assert(exec.stderr.includes("HMP: invalid CPU index"), show(exec));
});
