/** Opt-in reconnection against real QEMU restarted on the same socket path. */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { ConnectionClosedError } from "../lib/errors.ts";

function spawnQemu(socket: string): Deno.ChildProcess {
  return new Deno.Command("qemu-system-x86_64", {
    args: [
      "-machine",
      "pc",
      "-accel",
      "tcg",
      "-m",
      "64",
      "-S",
      "-nodefaults",
      "-display",
      "none",
      "-qmp",
      `unix:${socket},server=on,wait=off`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* exited */ }
  await child.status;
}

Deno.test("reconnect: listeners survive a QEMU restart; in-flight commands fail, not re-sent", async () => {
  const dir = await Deno.makeTempDir();
  const socket = `${dir}/qmp.sock`;
  let qemu = spawnQemu(socket);
  const reconnects: number[] = [];
  const drops: string[] = [];
  const qmp = await connect(`unix:${socket}`, {
    retry: true,
    timeout: "10s",
    reconnect: {
      maxTries: 50,
      initialDelay: 50,
      maxDelay: 200,
      onReconnect: ({ attempt }) => reconnects.push(attempt),
      onDisconnect: (e) => drops.push(e.reason),
    },
  });
  try {
    const events = qmp.events({ names: ["RESUME", "STOP"] });
    const resumed = qmp.waitEvent("RESUME", { timeout: "20s" });
    // A wait armed before the drop that is satisfied after the reconnect.
    const pending = qmp.waitEvent("STOP", { timeout: "20s" });
    await stop(qemu);
    await assert.rejects(qmp.execute("query-status"), ConnectionClosedError);
    assert.equal(qmp.state === "reconnecting" || qmp.state === "open", true);
    qemu = spawnQemu(socket);
    // Wait for the reconnect to complete.
    const t0 = Date.now();
    while (qmp.state !== "open" && Date.now() - t0 < 15000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(qmp.state, "open");
    assert.equal(reconnects.length, 1);
    assert.deepEqual(drops, ["peer"]);
    assert.equal((await qmp.execute("query-status")).status, "prelaunch");
    await qmp.execute("cont");
    await resumed;
    await qmp.execute("stop");
    await pending;
    assert.deepEqual([(await events.get()).event, (await events.get()).event], ["RESUME", "STOP"]);
    events.close();
  } finally {
    await qmp.close();
    await stop(qemu);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reconnect: gives up after maxTries and closes with reason peer", async () => {
  const dir = await Deno.makeTempDir();
  const socket = `${dir}/qmp.sock`;
  const qemu = spawnQemu(socket);
  const qmp = await connect(`unix:${socket}`, {
    retry: true,
    timeout: "10s",
    reconnect: { maxTries: 3, initialDelay: 10, maxDelay: 20 },
  });
  try {
    const it = qmp.events();
    await stop(qemu);
    await qmp.closed;
    assert.equal(qmp.state, "closed");
    assert.equal(qmp.closeError?.reason, "peer");
    await assert.rejects(it.next(), ConnectionClosedError);
  } finally {
    await qmp.close();
    await stop(qemu);
    await Deno.remove(dir, { recursive: true });
  }
});
