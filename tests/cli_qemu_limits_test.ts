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

/** `{"x": [[...]]}`: an arguments object `depth` levels deep. */
function nested(depth: number): string {
  return `{"x":${"[".repeat(depth - 1)}${"]".repeat(depth - 1)}}`;
}

Deno.test("qmp exec --args: the real nesting limit is QEMU's (1023 inside arguments)", async () => {
  await using qemu = await startQemuForClients({ machine: "none" });
  // 1023 levels reach QEMU, which parses them and judges the arguments.
  const deepest = await qmp(["exec", qemu.address, "query-status", "--args", nested(1023)]);
  assertEquals(deepest.code, 1, show(deepest));
  assert(deepest.stderr.includes("Parameter 'x' is unexpected (GenericError)"), show(deepest));
  // Deeper is a usage error naming the limit, not "not valid JSON" nor QEMU's parse error.
  for (const depth of [1024, 10_000]) {
    const r = await qmp(["exec", qemu.address, "query-status", "--args", nested(depth)]);
    assertEquals(r.code, 2, show(r));
    assertEquals(
      r.stderr,
      `qmp exec: error: --args: nested ${depth} levels deep; QEMU accepts at most 1023 (its ` +
        `JSON parser allows 1024 levels per message, and the message is one) ` +
        `(see qmp exec --help)\n`,
    );
  }
  // The same limit for key=value values and raw JSON lines in the shell.
  const kv = await qmp(["exec", qemu.address, "query-status", `x=${nested(1023).slice(5, -1)}`]);
  assertEquals(kv.code, 1, show(kv));
  assert(kv.stderr.includes("Parameter 'x' is unexpected"), show(kv));
  const kvDeep = await qmp([
    "exec",
    qemu.address,
    "query-status",
    `x=${nested(1024).slice(5, -1)}`,
  ]);
  assertEquals(kvDeep.code, 2, show(kvDeep));
  assert(kvDeep.stderr.includes("arguments with x=: nested 1024 levels deep"), show(kvDeep));
  const line = `{"execute":"query-status","arguments":${nested(2000)}}\n`;
  const shell = await qmp(["shell", qemu.address], { stdin: line });
  assertEquals(shell.code, 1, show(shell));
  assertEquals(
    shell.stderr,
    "qmp shell: line 1: error: the command: nested 2001 levels deep; QEMU's JSON parser " +
      "accepts at most 1024\n",
  );
});
