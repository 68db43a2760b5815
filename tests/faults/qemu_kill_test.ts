/**
 * Real QEMU (started with `launch()`) SIGKILLed at bad moments: with a
 * command pending (QEMU frozen by SIGSTOP first, so the reply cannot race the
 * kill), during a `waitEvent`, during a block job, during a migration, and in
 * the middle of a playbook step (the runner in a subprocess).
 *
 * Each time: what was pending rejects with ConnectionClosedError (reason
 * "peer") soon after the kill, `vm.signal` is "SIGKILL", `vm.describeExit()`
 * says so, no QEMU (or helper it spawned) is left, and the private temp dir
 * is gone. A table of the timings is printed.
 */
import assert from "node:assert/strict";
import { ConnectionClosedError } from "../../lib/errors.ts";
import { launch, type LaunchOptions, type Machine } from "../../lib/machine.ts";
import {
  alive,
  allSettledOnce,
  assertNoUnhandled,
  comm,
  descendants,
  exists,
  gone,
  guardUnhandled,
  printTable,
  type ProcessInfo,
  type Row,
  track,
  type Tracked,
  within,
} from "./harness.ts";

guardUnhandled();

const rows: Row[] = [];
const REJECT_BOUND = 2000; // ms from SIGKILL to every pending promise rejected
const ROOT = new URL("../../", import.meta.url).pathname;

/**
 * Launches a VM, runs `arm` (which returns the promises that must be pending
 * when QEMU dies), SIGKILLs QEMU and checks everything the module doc lists.
 */
async function killDuring(
  what: string,
  options: LaunchOptions,
  arm: (vm: Machine) => Promise<Tracked[]>,
): Promise<void> {
  const vm = await launch({ timeout: "20s", ...options, qmp: { commandTimeout: "30s" } });
  let helpers: ProcessInfo[] = [];
  try {
    assert.match(comm(vm.pid), /^qemu-system/, `vm.pid is QEMU itself: ${comm(vm.pid)}`);
    const pending = await arm(vm);
    helpers = descendants(vm.pid);
    for (const t of pending) assert.equal(t.outcome, "pending", `${t.label} is pending`);
    const killedAt = performance.now();
    Deno.kill(vm.pid, "SIGKILL");
    const last = await allSettledOnce(pending, 10_000);
    const rejectMs = Math.round(last - killedAt);
    await within(vm.exited, 10_000, "vm.exited");
    const exitMs = Math.round(performance.now() - killedAt);

    for (const t of pending) {
      assert.equal(t.outcome, "rejected", `${t.label} resolved`);
      assert.ok(t.error instanceof ConnectionClosedError, `${t.label}: ${t.error}`);
      assert.equal(t.error.reason, "peer", `${t.label}: reason`);
      assert.match(t.error.message, /QEMU closed the connection .*\(it exited or was killed\)/);
    }
    assert.ok(rejectMs < REJECT_BOUND, `rejected ${rejectMs} ms after SIGKILL`);
    assert.equal(vm.signal, "SIGKILL");
    assert.equal(vm.running, false);
    assert.match(vm.describeExit() ?? "", /^killed by SIGKILL/);
    assert.equal(alive(vm.pid), false, `QEMU pid ${vm.pid} still exists`);
    for (const h of helpers) {
      assert.ok(await gone(h.pid, 5000), `QEMU's helper ${h.pid} (${h.comm}) outlived it`);
    }
    assert.equal(await exists(vm.dir), false, `temp dir ${vm.dir} removed`);
    assert.equal(vm.qmp.state, "closed");
    const e = pending[0].error as ConnectionClosedError;
    rows.push({
      "killed during": what,
      pending: pending.map((t) => t.label).join(", "),
      "error users see": `${e.name}(${e.reason})` +
        (e.cause instanceof Error ? ` ← ${e.cause.name}` : " (EOF)"),
      "reject ms": rejectMs,
      "exit seen ms": exitMs,
      "describeExit()": (vm.describeExit() ?? "").replace(/\s*\n\s*/g, " ⏎ ").slice(0, 60),
      "helpers (gone)": helpers.map((h) => h.comm).join(", ") || "-",
    });
  } finally {
    if (vm.running) {
      try {
        Deno.kill(vm.pid, "SIGCONT");
      } catch { /* gone */ }
      await vm.kill();
    }
  }
  await assertNoUnhandled();
}

Deno.test("SIGKILL with a command pending (QEMU frozen by SIGSTOP)", async () => {
  await killDuring("a command (SIGSTOP first)", { machine: "none" }, (vm) => {
    Deno.kill(vm.pid, "SIGSTOP");
    const p = [
      track("query-status", vm.qmp.execute("query-status")),
      track("query-name", vm.qmp.execute("query-name")),
    ];
    return new Promise((r) => setTimeout(() => r(p), 200)); // sent, never answered
  });
});

Deno.test("SIGKILL during waitEvent and an events() iteration", async () => {
  await killDuring("waitEvent + events()", { machine: "pc", paused: true, memory: 64 }, (vm) => {
    const listener = vm.qmp.events({ names: ["RESET"] });
    return Promise.resolve([
      track("waitEvent(SHUTDOWN)", vm.qmp.waitEvent("SHUTDOWN", { timeout: "60s" })),
      track("events() next", listener.next()),
    ]);
  });
});

Deno.test("SIGKILL during a block job (blockdev-backup at 1 MiB/s of 10 GiB)", async () => {
  await killDuring("blockdev-backup running", { machine: "none" }, async (vm) => {
    const q = vm.qmp;
    for (const node of ["src", "tgt"]) {
      await q.execute("blockdev-add", { driver: "null-co", "node-name": node, size: 10 * 2 ** 30 });
    }
    const running = q.waitEvent("JOB_STATUS_CHANGE", {
      where: { id: "job0", status: "running" },
      timeout: "10s",
    });
    await q.execute("blockdev-backup", {
      "job-id": "job0",
      device: "src",
      target: "tgt",
      sync: "full",
      speed: 1024 * 1024,
    });
    await running;
    const done = q.waitEvent("BLOCK_JOB_COMPLETED", { timeout: "60s" });
    let offset: number | bigint = 0;
    for (let i = 0; i < 50 && offset == 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      offset = (await q.execute("query-block-jobs"))[0]?.offset ?? 0;
    }
    const [job] = await q.execute("query-block-jobs");
    assert.equal(job.status, "running");
    assert.ok(job.offset > 0 && job.offset < job.len, `offset ${job.offset} of ${job.len}`);
    return [
      track("waitEvent(BLOCK_JOB_COMPLETED)", done),
      track(
        "query-block-jobs (frozen)",
        (() => {
          Deno.kill(vm.pid, "SIGSTOP");
          return q.execute("query-block-jobs");
        })(),
      ),
    ];
  });
});

Deno.test("SIGKILL during a migration (exec:cat > /dev/null at 64 KiB/s)", async () => {
  await killDuring(
    "migration active (-M pc -m 128, running)",
    { machine: "pc", memory: 128, accel: "tcg" },
    async (vm) => {
      const q = vm.qmp;
      await q.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "events", state: true }],
      });
      await q.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 });
      const active = q.waitEvent("MIGRATION", { where: { status: "active" }, timeout: "10s" });
      await q.execute("migrate", { uri: "exec:cat > /dev/null" });
      await active;
      const completed = q.waitEvent("MIGRATION", {
        where: { status: "completed" },
        timeout: "60s",
      });
      const m = await q.execute("query-migrate");
      assert.equal(m.status, "active");
      assert.ok((m.ram?.remaining ?? 0) > 10 * 2 ** 20, `remaining ${m.ram?.remaining}`);
      assert.ok(descendants(vm.pid).length >= 1, "the exec: migration helper runs");
      return [
        track("waitEvent(MIGRATION completed)", completed),
        track(
          "query-migrate (frozen)",
          (() => {
            Deno.kill(vm.pid, "SIGSTOP");
            return q.execute("query-migrate");
          })(),
        ),
      ];
    },
  );
});

Deno.test("SIGKILL while a helper that never reads holds QEMU's stderr (exec:sleep 30)", async () => {
  // The helper outlives QEMU and keeps its stderr pipe open: vm.exited must not wait for it,
  // and the helper must not be left running (it is in QEMU's process group).
  await killDuring(
    "migration into a helper that never reads (exec:sleep 30)",
    { machine: "pc", memory: 128, accel: "tcg" },
    async (vm) => {
      const q = vm.qmp;
      const active = q.waitEvent("MIGRATION", { where: { status: "active" }, timeout: "10s" });
      await q.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "events", state: true }],
      });
      await q.execute("migrate", { uri: "exec:sleep 30" });
      await active;
      assert.ok(descendants(vm.pid).length >= 1, "the exec: migration helper runs");
      return [
        track(
          "waitEvent(MIGRATION completed)",
          q.waitEvent("MIGRATION", {
            where: { status: "completed" },
            timeout: "60s",
          }),
        ),
        track(
          "query-migrate (frozen)",
          (() => {
            Deno.kill(vm.pid, "SIGSTOP");
            return q.execute("query-migrate");
          })(),
        ),
      ];
    },
  );
});

Deno.test("SIGKILL in the middle of a playbook step (runner as a subprocess)", async () => {
  const out = await Deno.makeTempDir({ prefix: "qmpkit-fault-pb-" });
  try {
    const t0 = performance.now();
    const proc = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-net",
        "--allow-run",
        "--allow-env",
        `${ROOT}scripts/play.ts`,
        `${ROOT}tests/faults/kill_mid_step.playbook.ts`,
      ],
      env: { QMPKIT_FAULT_OUT: out, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
    const res = await proc.output();
    clearTimeout(timer);
    const ms = Math.round(performance.now() - t0);
    const text = new TextDecoder().decode(res.stderr) + new TextDecoder().decode(res.stdout);
    const info = JSON.parse(await Deno.readTextFile(`${out}/vm.json`)) as {
      pid: number;
      dir: string;
      tempDir: string;
    };
    const checks: [string, boolean][] = [
      ["exit status 1 (a failed playbook)", res.code === 1],
      ["names the failed step", /✗ query-status while QEMU is killed/.test(text)],
      [
        "names the command and the error",
        /ConnectionClosedError: query-status did not complete: QEMU closed the connection/.test(
          text,
        ),
      ],
      ["the step after it did not run", !/never runs/.test(text.split("Failures:")[0])],
      ["cleanups ran", await exists(`${out}/cleanup-ran`)],
      ["no QEMU left", !alive(info.pid)],
      ["QEMU's temp dir removed", !(await exists(info.dir))],
      ["the playbook's temp dir removed", !(await exists(info.tempDir))],
      ["names QEMU's exit signal (vm.describeExit(): killed by SIGKILL)", /SIGKILL/.test(text)],
    ];
    rows.push({
      "killed during": "a playbook step (scripts/play.ts)",
      pending: "query-status in step 2",
      "error users see": "runner report, exit 1",
      "reject ms": "-",
      "exit seen ms": `${ms} (whole run)`,
      "describeExit()": /SIGKILL/.test(text) ? "in report" : "NOT in report",
      "helpers (gone)": "-",
    });
    const failed = checks.filter(([, ok]) => !ok).map(([name]) => name);
    assert.deepEqual(failed, [], `runner output:\n${text}`);
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
  }
});

Deno.test("QEMU kill table", () => {
  printTable("QEMU SIGKILLed (launch(); times from the SIGKILL)", rows);
  assert.ok(rows.length >= 4);
});
