/** launch() in accept mode (QEMU dials the launcher) against real QEMU. */
import assert from "node:assert/strict";
import { launch } from "../lib/machine.ts";
import { connect } from "../lib/client.ts";
import { LaunchError } from "../lib/errors.ts";
import { within } from "./helpers/qemu.ts";

Deno.test("machine accept: vm.qmp came from QEMU dialing in; vm.socketPath is a second, free monitor", async () => {
  await using vm = await launch({ timeout: "20s", name: "accept-mode" });
  assert.match(vm.qmp.address, /qmp-launch\.sock \(accepted\)$/);
  assert.ok(vm.commandLine.some((a) => /^unix:.*qmp-launch\.sock$/.test(a)), "client-mode -qmp");
  // The listening socket is gone once QEMU is accepted; only the server-mode monitor remains.
  const entries = [];
  for await (const e of Deno.readDir(vm.dir)) entries.push(e.name);
  assert.deepEqual(entries.sort(), ["qmp.sock"]);
  // A second client on socketPath while vm.qmp stays connected: both answer.
  await using second = await within(connect(vm.socketPath, { timeout: "5s" }), 8000, "second");
  const [a, b] = await Promise.all([
    vm.qmp.execute("query-name"),
    second.execute("query-name"),
  ]);
  assert.equal(a.name, "accept-mode");
  assert.equal(b.name, "accept-mode");
});

Deno.test("machine accept: a QEMU that exits before dialing in fails launch() at once, not at the timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-fake-qemu-" });
  try {
    const fake = `${dir}/qemu-exits`;
    await Deno.writeTextFile(
      fake,
      "#!/bin/sh\nsleep 0.3\necho 'fake: no monitor today' >&2\nexit 3\n",
    );
    await Deno.chmod(fake, 0o755);
    const t0 = performance.now();
    await assert.rejects(
      within(launch({ binary: fake, accel: "tcg", timeout: "60s" }), 10_000, "launch"),
      (e: unknown) => {
        assert.ok(e instanceof LaunchError, String(e));
        assert.equal(e.exitCode, 3);
        assert.equal(e.timeoutMs, undefined);
        assert.match(e.message, /exited before its QMP monitor was ready/);
        assert.match(e.stderr ?? "", /no monitor today/);
        return true;
      },
    );
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `rejected after ${Math.round(ms)} ms (timeout was 60 s)`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("machine accept: qmp.reconnect is refused before QEMU starts, naming the alternative", async () => {
  await assert.rejects(
    // @ts-expect-error: reconnect is not a launch() client option any more
    launch({ qmp: { reconnect: true } }),
    (e: unknown) => {
      assert.ok(e instanceof LaunchError);
      assert.match(e.message, /connect\(vm\.socketPath, \{ reconnect: true \}\)/);
      return true;
    },
  );
});
