/**
 * The `qmp` CLI as a user meets it, run as a subprocess against the fake
 * server: batch-mode input errors, option conflicts, global flags, address
 * forms (bare relative socket paths, $QMP_SOCKET), error wording and exit
 * codes.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { FAKE_STATUS, fakeMonitor } from "./helpers/fake_monitor.ts";
import { qmp, show } from "./helpers/cli.ts";

Deno.test("qmp shell batch: input errors are line N errors and obey --keep-going", async () => {
  await using server = await fakeMonitor();
  const input = `device_add driver="usb-tablet\n{"execute":"query-status"\nx=[1,2\nquery-status\n`;
  const stop = await qmp(["shell", server.address], { stdin: input });
  assertEquals(stop.code, 1, show(stop));
  assertEquals(stop.stdout, "", show(stop));
  assertEquals(
    stop.stderr,
    `qmp shell: line 1: error: No closing quotation for " in "\\"usb-tablet"\n`,
  );

  const all = await qmp(["shell", server.address, "--keep-going"], { stdin: input });
  assertEquals(all.code, 1, show(all));
  const errors = all.stderr.trimEnd().split("\n");
  assertEquals(errors.length, 3, show(all));
  assert(errors[0].startsWith("qmp shell: line 1: error: No closing quotation"), show(all));
  assert(errors[1].startsWith("qmp shell: line 2: error: "), show(all));
  assert(errors[2].startsWith("qmp shell: line 3: error: Unbalanced brackets"), show(all));
  assertEquals(JSON.parse(all.stdout), FAKE_STATUS);
});
