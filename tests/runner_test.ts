/**
 * The playbook runner end to end: playbooks written to a temp dir (importing
 * the library by absolute file URL) are run by `scripts/play.ts` in a
 * subprocess against real QEMU (`-machine none` or `-M pc -S`: no guest, fast).
 * Every subprocess is bounded by a deadline and killed if it overruns.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { findTinyGuest } from "../lib/guest.ts";
import { Play, play, ROOT, withDir, writePlaybook } from "./helpers/play.ts";
import { startQemu } from "./helpers/qemu.ts";
import { pidExists } from "./helpers/process.ts";

const PASSING = `
export default playbook({ name: "passing", vm: { machine: "pc", paused: true, memory: 64 } }, async (t) => {
  await t.step("prelaunch", async () => {
    t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "prelaunch" });
  });
  await t.step("cont", async () => {
    await t.expectEvent("RESUME", () => t.qmp.execute("cont"), { timeout: "5s" });
    await t.step("running", async () => {
      t.expect((await t.qmp.execute("query-status")).status).toBe("running");
    });
  });
  await t.step("errors are typed", async () => {
    await t.expectError(() => t.qmp.execute("device_del", { id: "nope" }), { class: "DeviceNotFound" });
  });
});`;

Deno.test("a passing playbook exits 0 and prints ✓ per step", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "passing", PASSING);
    const r = await play([file]);
    assert.equal(r.code, 0, r.stderr);
    for (const line of ["✓ prelaunch", "✓ running", "✓ cont", "✓ errors are typed"]) {
      assert.match(r.stderr, new RegExp(line), r.stderr);
    }
    assert.match(r.stderr, /1 passed, 0 failed playbooks/);
    assert.ok(!r.stderr.includes("\x1b["), "NO_COLOR: no ANSI escapes");
    assert.equal(r.stdout, "", "the pretty reporter writes to stderr only");
  });
});

Deno.test("a failing step: exit 1, step path, diff, QMP messages, cleanups run LIFO", async () => {
  await withDir(async (dir) => {
    const marker = `${dir}/cleanups.txt`;
    const file = await writePlaybook(
      dir,
      "failing",
      `
export default playbook({ name: "failing", vm: { machine: "none" } }, async (t) => {
  t.cleanup(() => Deno.writeTextFile(${JSON.stringify(marker)}, "first\\n", { append: true }));
  t.cleanup(() => Deno.writeTextFile(${JSON.stringify(marker)}, "second\\n", { append: true }));
  await t.step("outer", async () => {
    await t.step("inner", async () => {
      t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "paused" });
    });
  });
  await t.step("after", () => {});
});`,
    );
    const r = await play([file]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /✗ inner/);
    assert.match(r.stderr, /at: outer › inner/);
    assert.match(r.stderr, /- {3}status: "paused",/);
    assert.match(r.stderr, /\+ {3}status: "running",/);
    assert.match(r.stderr, /last QMP messages/);
    assert.match(r.stderr, /vm → \{"execute":"query-status"/);
    assert.doesNotMatch(r.stderr, /✓ after|✗ after/, "steps after a failure do not run");
    assert.equal(await Deno.readTextFile(marker), "second\nfirst\n");
  });
});

Deno.test("a step timeout fails the step with StepTimeoutError and aborts t.signal", async () => {
  await withDir(async (dir) => {
    const marker = `${dir}/aborted.txt`;
    const file = await writePlaybook(
      dir,
      "timeout",
      `
export default playbook({ name: "timeout", vm: { machine: "none" } }, async (t) => {
  await t.step("waits for an event that never comes", async () => {
    const signal = t.signal; // this step's signal (t.signal follows the async context)
    signal.addEventListener("abort", () => Deno.writeTextFileSync(${
        JSON.stringify(marker)
      }, String(signal.reason?.name)));
    await t.qmp.waitEvent("RESET", { signal });
  }, { timeout: "300ms" });
});`,
    );
    const t0 = performance.now();
    const r = await play([file]);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(performance.now() - t0 < 20_000);
    assert.match(
      r.stderr,
      /StepTimeoutError: Step "waits for an event that never comes" did not complete within 300ms/,
    );
    assert.equal(await Deno.readTextFile(marker), "StepTimeoutError");
  });
});

Deno.test("a playbook timeout (--timeout) stops the playbook", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(
      dir,
      "slow",
      `
export default playbook({ name: "slow", vm: { machine: "none" }, timeout: "1m" }, async (t) => {
  await t.step("sleeps", () => t.sleep("30s"));
});`,
    );
    const r = await play([file, "--timeout", "500ms", "--reporter", "json"]);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout);
    const step = report.playbooks[0].steps[0];
    assert.equal(step.status, "failed");
    assert.equal(step.failure.name, "PlaybookTimeoutError");
    assert.match(step.failure.message, /Playbook "slow" did not complete within 500ms/);
  });
});

Deno.test("Ctrl-C: t.signal aborts, cleanups run, QEMU is gone, exit 130", async () => {
  await withDir(async (dir) => {
    const marker = `${dir}/cleanup.txt`;
    const file = await writePlaybook(
      dir,
      "interrupt",
      `
export default playbook({ name: "interrupt", vm: { machine: "pc", paused: true, memory: 64 } }, async (t) => {
  t.cleanup(async () => {
    const s = await t.qmp.execute("query-status");
    await Deno.writeTextFile(${JSON.stringify(marker)}, "cleanup " + s.status);
  });
  await t.step("waits", async () => {
    console.error("QEMU-PID " + t.vm.pid);
    await t.qmp.waitEvent("RESET", { signal: t.signal });
  });
});`,
    );
    const p = new Play([file]);
    const [, pid] = await p.waitStderr(/QEMU-PID (\d+)\n/);
    assert.ok(await pidExists(Number(pid)));
    p.child.kill("SIGINT");
    const r = await p.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /Interrupted/);
    assert.match(r.stderr, /InterruptedError/);
    assert.doesNotMatch(r.stderr, /✗ \(playbook\)/, "reported once, by the step");
    assert.equal(await Deno.readTextFile(marker), "cleanup prelaunch");
    assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
  });
});

Deno.test("a playbook that throws at import: exit 1, file name and message", async () => {
  await withDir(async (dir) => {
    const bad = `${dir}/broken.playbook.ts`;
    await Deno.writeTextFile(bad, `throw new Error("kaboom at import");\nexport default 1;\n`);
    const noDefault = `${dir}/nodefault.playbook.ts`;
    await Deno.writeTextFile(noDefault, `export const x = 1;\n`);
    const r = await play([dir]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /broken\.playbook\.ts: failed to load: Error: kaboom at import/);
    assert.match(r.stderr, /nodefault\.playbook\.ts: the default export is not a playbook/);
  });
});

Deno.test("load and --qmp connection errors: one line each, no stack, no colour codes", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/nodefault.playbook.ts`, `export const x = 1;\n`);
    await Deno.writeTextFile(
      `${dir}/syntax.playbook.ts`,
      `export default function f() { let = ; }\n`,
    );
    await Deno.writeTextFile(
      `${dir}/missing.playbook.ts`,
      `import { nope } from "./does-not-exist.ts";\nexport default nope;\n`,
    );
    // NO_COLOR empty: colours are on, as for a user without it (output is still piped).
    const r = await play([dir], { env: { NO_COLOR: "" } });
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!r.stderr.includes("\x1b["), `colour codes in piped output:\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /^\s*at (async )?\S+ \(/m, "a stack frame");
    assert.match(r.stderr, /nodefault\.playbook\.ts: the default export is not a playbook/);
    assert.match(
      r.stderr,
      /syntax\.playbook\.ts: failed to load: SyntaxError: Expression expected \(at \S*syntax\.playbook\.ts:1:\d+\)\n/,
    );
    assert.equal(r.stderr.match(/Expression expected/g)?.length, 1, "said once");
    assert.match(
      r.stderr,
      /missing\.playbook\.ts: failed to load: TypeError: Module not found "\S+does-not-exist\.ts"\. \(at \S*missing\.playbook\.ts:1:\d+\)\n/,
    );
    const verbose = await play([`${dir}/nodefault.playbook.ts`, "--verbose"]);
    assert.match(verbose.stderr, /at loadPlaybook \(/, "--verbose shows the stack");
  });
  const nowhere = await play(["lifecycle", "--qmp", "/tmp/nonexistent.sock"]);
  assert.equal(nowhere.code, 1, nowhere.stderr);
  assert.match(nowhere.stderr, /ConnectionError: Cannot connect to unix:\/tmp\/nonexistent\.sock/);
  assert.match(nowhere.stderr, /Use --retry to wait for a QEMU that is still starting/);
  assert.doesNotMatch(nowhere.stderr, /retry: true|lib\/transport\.ts|^\s*at /m);
  const verbose = await play(["lifecycle", "--qmp", "/tmp/nonexistent.sock", "-v"]);
  assert.match(verbose.stderr, /at \w+ \(\S*lib\/transport\.ts:\d+/);
  assert.match(verbose.stderr, /caused by: NotFound/);
});

Deno.test("--qmp --retry waits for a monitor that appears later", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(
      dir,
      "late",
      `export default playbook({ name: "late" }, async (t) => {
  await t.step("status", () => t.qmp.execute("query-status"));
});`,
    );
    const sock = `${dir}/late.sock`;
    const p = new Play([file, "--qmp", sock, "--retry"]);
    await new Promise((r) => setTimeout(r, 500));
    await using _qemu = await startQemu({
      machine: "none",
      extraArgs: ["-qmp", `unix:${sock},server=on,wait=off`],
    });
    const r = await p.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /✓ status/);
  });
});

Deno.test("a --filter that matches nothing: says so and exits 2, run or --list", async () => {
  for (const extra of [[], ["--list"], ["--list", "--reporter", "json"]]) {
    const r = await play(["lifecycle", "--filter", "nomatch", ...extra]);
    assert.equal(r.code, 2, `${extra.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /--filter nomatch matches no playbook or step \(in 1 playbook file\)/);
    assert.match(r.stderr, /\nhint: --list shows playbook and step names/);
    assert.doesNotMatch(r.stderr, /passed/, "nothing ran");
  }
  // A filter that selects a step still runs (here: lists) it.
  const some = await play(["lifecycle", "--filter", "/^pause and/", "--list"]);
  assert.equal(some.code, 0, some.stderr);
  assert.match(some.stdout, /• pause and resume\n/);
});

const STEPS = `
export default playbook({ name: "steps", description: "three steps", vm: { machine: "none" } }, async (t) => {
  await t.step("alpha", async () => {
    await t.step("alpha inner", () => t.qmp.execute("query-status"));
  });
  await t.step("beta", () => t.qmp.execute("query-version"));
  await t.step("gamma", () => t.qmp.execute("query-name"), { skip: "not today" });
});`;

Deno.test("--list shows top-level steps without launching a VM", async () => {
  await withDir(async (dir) => {
    // A binary that does not exist: listing must not try to launch it.
    const file = await writePlaybook(
      dir,
      "steps",
      STEPS.replace(`vm: { machine: "none" }`, `vm: { binary: "/nonexistent/qemu" }`),
    );
    const r = await play([file, "--list"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^steps {2}\(.*steps\.playbook\.ts\)$/m);
    assert.match(r.stdout, /three steps/);
    assert.match(r.stdout, /• alpha\n {2}• beta\n {2}• gamma {2}\(skip: not today\)/);
    assert.doesNotMatch(r.stdout, /alpha inner/, "nested steps are not listed");
    const json = await play([file, "--list", "--reporter", "json", "--filter", "beta"]);
    assert.equal(json.code, 0, json.stderr);
    const listing = JSON.parse(json.stdout);
    assert.deepEqual(listing.playbooks[0].steps, [{ name: "beta", matched: true }]);
  });
});

interface JsonStep {
  name: string;
  status: string;
  steps: JsonStep[];
  skipReason?: string;
}

Deno.test("--filter runs matching steps (and their children) only", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "steps", STEPS);
    const r = await play([file, "--filter", "alpha", "--reporter", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const pb = JSON.parse(r.stdout).playbooks[0];
    const status = (s: JsonStep[]): unknown =>
      s.map((x) => [x.name, x.status, ...(x.steps.length ? [status(x.steps)] : [])]);
    assert.deepEqual(status(pb.steps), [
      ["alpha", "passed", [["alpha inner", "passed"]]],
      ["beta", "skipped"],
      ["gamma", "skipped"],
    ]);
    assert.match(pb.steps[1].skipReason, /filtered out by --filter alpha/);

    const regex = await play([file, "--filter", "/^alpha › alpha in/", "--reporter", "json"]);
    // A regex cannot tell whether a step's children could match: it selects top-level
    // steps (or whole playbooks) only, so this selects nothing (and launches nothing).
    assert.equal(regex.code, 2, regex.stderr);
    assert.match(regex.stderr, /matches no playbook or step/);
    assert.equal(regex.stdout, "");
    const top = await play([file, "--filter", "/^(alpha|beta)$/", "--reporter", "json"]);
    const pb5 = JSON.parse(top.stdout).playbooks[0];
    assert.deepEqual(pb5.steps.map((s: JsonStep) => s.status), ["passed", "passed", "skipped"]);

    const nested = await play([file, "--filter", "alpha › alpha inner", "--reporter", "json"]);
    const pb3 = JSON.parse(nested.stdout).playbooks[0];
    assert.deepEqual(status(pb3.steps), [
      ["alpha", "passed", [["alpha inner", "passed"]]],
      ["beta", "skipped"],
      ["gamma", "skipped"],
    ]);

    // With two playbooks, one no step of which matches is not even launched.
    const other = await writePlaybook(
      dir,
      "other",
      `export default playbook({ name: "other", vm: { binary: "/nonexistent/qemu" } }, async (t) => {
  await t.step("zeta", () => {});
});`,
    );
    const two = await play([file, other, "--filter", "beta", "--reporter", "json"]);
    assert.equal(two.code, 0, two.stderr);
    const [, pb4] = JSON.parse(two.stdout).playbooks;
    assert.equal(pb4.status, "skipped");
    assert.deepEqual(pb4.steps, [], "a playbook no step of which matches is not even launched");
  });
});

Deno.test("--bail stops after the first failed playbook", async () => {
  await withDir(async (dir) => {
    await writePlaybook(
      dir,
      "a-fails",
      `export default playbook({ name: "a", vm: { machine: "none" } }, async (t) => {
  await t.step("fails", () => t.expect(1).toBe(2));
});`,
    );
    await writePlaybook(
      dir,
      "b-passes",
      `export default playbook({ name: "b", vm: { machine: "none" } }, async (t) => {
  await t.step("passes", () => {});
});`,
    );
    const all = await play([dir, "--reporter", "json"]);
    assert.equal(all.code, 1);
    assert.deepEqual(JSON.parse(all.stdout).playbooks.map((p: { status: string }) => p.status), [
      "failed",
      "passed",
    ]);
    const bail = await play([dir, "--bail", "--reporter", "json"]);
    assert.equal(bail.code, 1);
    const report = JSON.parse(bail.stdout);
    assert.equal(report.playbooks[1].status, "skipped");
    assert.match(report.playbooks[1].skipReason, /--bail/);
  });
});

Deno.test("--record writes every QMP message as JSONL", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "passing", PASSING);
    const rec = `${dir}/rec`;
    const r = await play([file, "--record", rec]);
    assert.equal(r.code, 0, r.stderr);
    const lines = (await Deno.readTextFile(`${rec}/passing.jsonl`)).trimEnd().split("\n");
    const records = lines.map((l) => JSON.parse(l));
    for (const x of records) {
      assert.equal(typeof x.time, "string");
      assert.ok(!Number.isNaN(Date.parse(x.time)));
      assert.equal(x.vm, "vm");
      assert.ok(x.direction === "send" || x.direction === "recv");
      assert.equal(typeof x.message, "object");
    }
    assert.ok("QMP" in records[0].message, "the greeting comes first");
    assert.deepEqual(records[1].message, { execute: "qmp_capabilities", id: 1 });
    const sent = records.filter((x) => x.direction === "send").map((x) => x.message.execute);
    assert.deepEqual(sent.slice(0, 5), [
      "qmp_capabilities",
      "query-status",
      "cont",
      "query-status",
      "device_del",
    ]);
    assert.ok(records.some((x) => x.message.event === "RESUME"));
    assert.ok(
      records.some((x) => (x.message.error as { class?: string })?.class === "DeviceNotFound"),
    );
  });
});

const MIXED = `
export default playbook({ name: "mixed <&>", vm: { machine: "none" } }, async (t) => {
  t.cleanup(() => { throw new Error("cleanup broke"); });
  await t.step("ok # hash", () => t.log("a log line"));
  await t.step("skipped", () => {}, { skip: true });
  await t.step("group", async () => {
    await t.step("bad", async () => {
      t.expect(await t.qmp.execute("query-status")).toEqual({ running: false, singlestep: false, status: "paused" });
    });
  });
});`;

Deno.test("--reporter json: counts, steps, failure details", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "mixed", MIXED);
    const r = await play([file, "--reporter", "json"]);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.version, 1);
    assert.equal(report.ok, false);
    assert.deepEqual(report.counts, {
      playbooks: { passed: 0, failed: 1, skipped: 0, interrupted: 0, flaky: 0 },
      steps: { passed: 1, failed: 2, skipped: 1 },
    });
    const pb = report.playbooks[0];
    assert.equal(pb.name, "mixed <&>");
    assert.equal(pb.status, "failed");
    assert.deepEqual(pb.steps.map((s: JsonStep) => s.status), ["passed", "skipped", "failed"]);
    const group = pb.steps[2];
    assert.equal(group.nestedFailure, true);
    const bad = group.steps[0].failure;
    assert.equal(bad.name, "ExpectationError");
    assert.equal(bad.matcher, "toEqual");
    assert.equal(bad.step, "group › bad");
    assert.match(bad.diff, /- {3}running: false,\n\+ {3}running: true,/);
    assert.match(bad.expected, /status: "paused"/);
    assert.ok(bad.transcript.length > 0 && bad.transcript.length <= 10);
    assert.deepEqual(bad.transcript.at(-2).message, { execute: "query-status", id: 2 });
    assert.equal(pb.cleanupFailures[0].message, "cleanup broke");
    assert.ok(pb.logs.some((l: { message: string }) => l.message === "a log line"));
  });
});

Deno.test("--reporter junit: one testsuite, a testcase per step", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "mixed", MIXED);
    const r = await play([file, "--reporter", "junit"]);
    assert.equal(r.code, 1, r.stderr);
    const x = r.stdout;
    assert.match(x, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<testsuites /);
    assert.match(
      x,
      /<testsuites name="qmpkit playbooks" tests="5" failures="2" errors="1" skipped="1"/,
    );
    assert.match(
      x,
      /<testsuite name="mixed &lt;&amp;&gt;" file="[^"]*mixed\.playbook\.ts" tests="5"/,
    );
    const cases = [...x.matchAll(/<testcase name="([^"]*)"/g)].map((m) => m[1]);
    assert.deepEqual(cases, ["ok # hash", "skipped", "group", "group › bad", "cleanup"]);
    assert.match(
      x,
      /<testcase name="group › bad" classname="mixed &lt;&amp;&gt;" time="[\d.]+"><failure message="expected/,
    );
    assert.match(x, /<skipped message="skipped"\/>/);
    assert.match(x, /<error message="cleanup broke" type="Error">/);
    assert.match(x, /<system-out>.*a log line/s);
    assert.equal(
      (x.match(/<testcase /g) ?? []).length,
      (x.match(/<\/testcase>|<testcase [^>]*\/>/g) ?? []).length,
    );
    assert.match(x, /<\/testsuites>\n$/);
  });
});

Deno.test("--reporter tap: TAP 14 with a subtest per playbook", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "mixed", MIXED);
    await writePlaybook(dir, "passing", PASSING);
    const r = await play([dir, "--reporter", "tap"]);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(lines[0], "TAP version 14");
    assert.equal(lines.at(-1), "1..2");
    assert.ok(lines.includes("# Subtest: mixed <&>"));
    assert.ok(lines.includes("    ok 1 - ok \\# hash"));
    assert.ok(lines.includes("    ok 2 - skipped # SKIP skipped"));
    assert.ok(lines.includes("    # Subtest: group"));
    assert.ok(lines.includes("        not ok 1 - bad"));
    assert.ok(lines.includes("    not ok 3 - group"));
    assert.ok(lines.includes("    not ok 4 - cleanup"));
    assert.ok(lines.includes("not ok 1 - mixed <&>"));
    assert.ok(lines.includes("ok 2 - passing"));
    const yaml = lines.indexOf("          ---");
    assert.ok(yaml > 0, "a YAML diagnostic block under the failed step");
    assert.match(lines[yaml + 1], /^ {10}message: "expected /);
    assert.ok(lines.slice(yaml).includes("          ..."));
    assert.ok(file.endsWith("mixed.playbook.ts"));
  });
});

Deno.test("--qmp attaches to a running VM; t.vm throws a clear error", async () => {
  await using qemu = await startQemu({ machine: "pc", paused: true });
  await withDir(async (dir) => {
    const file = await writePlaybook(
      dir,
      "attach",
      `
export default playbook({ name: "attach", vm: { machine: "none" } }, async (t) => {
  await t.step("attached", async () => {
    t.expect(t.attached).toBe(true);
    t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "prelaunch" });
  });
  await t.step("no vm", () => t.vm.pid);
});`,
    );
    const r = await play([file, "--qmp", qemu.address]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /✓ attached/);
    assert.match(
      r.stderr,
      /PlaybookUsageError: t\.vm is not available: playbook "attach" is attached to an existing VM \(--qmp unix:/,
    );
  });
  // The runner disconnected and left the VM alone.
  await using client = await connect(qemu.address, { timeout: "5s" });
  assert.equal((await client.execute("query-status")).status, "prelaunch");
});

Deno.test("--parallel 2 runs playbooks at the same time, each on its own VM", async () => {
  await withDir(async (dir) => {
    for (const [me, other] of [["a", "b"], ["b", "a"]]) {
      await writePlaybook(
        dir,
        me,
        `export default playbook({ name: "${me}", vm: { machine: "none" } }, async (t) => {
  await t.step("meets the other", async () => {
    await Deno.writeTextFile("${dir}/${me}.pid", String(t.vm.pid));
    await t.eventually(() => Deno.stat("${dir}/${other}.pid"), { timeout: "20s" });
  });
});`,
      );
    }
    const r = await play([dir, "--parallel", "2"]);
    assert.equal(r.code, 0, r.stderr);
    const pids = await Promise.all(["a", "b"].map((n) => Deno.readTextFile(`${dir}/${n}.pid`)));
    assert.notEqual(pids[0], pids[1]);
  });
});

Deno.test("--keep-vm leaves a failed playbook's VM running until Ctrl-C", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(
      dir,
      "keep",
      `export default playbook({ name: "keep", vm: { machine: "pc", paused: true, memory: 64 } }, async (t) => {
  await t.step("fails", () => t.expect(1).toBe(2));
});`,
    );
    const p = new Play([file, "--keep-vm"]);
    const [, pid, socket] = await p.waitStderr(/pid (\d+), QMP unix:(\S+)\n/);
    assert.ok(await pidExists(Number(pid)));
    {
      await using client = await connect(`unix:${socket}`, { timeout: "5s" });
      assert.equal((await client.execute("query-status")).status, "prelaunch");
    }
    p.child.kill("SIGINT");
    const r = await p.done;
    assert.equal(r.code, 1, r.stderr);
    assert.equal(await pidExists(Number(pid)), false);
  });
});

Deno.test("usage errors exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /no playbooks given/],
    [["--bogus", "x"], /Unknown option '--bogus'/],
    [["--reporter", "xml", "x"], /--reporter must be one of pretty, json, junit, tap/],
    [["--parallel", "0", "x"], /--parallel must be a positive integer/],
    [["--timeout", "soon", "x"], /--timeout: Invalid duration "soon"/],
    [["no-such-playbook"], /no-such-playbook: no such playbook file, directory or name/],
    [["--retry", "x"], /--retry applies to --qmp/],
  ];
  for (const [args, pattern] of cases) {
    const r = await play(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  const help = await play(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: deno task play/);
});

Deno.test("names resolve to examples/NAME.playbook.ts", async () => {
  const r = await play(["lifecycle", "--list"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /lifecycle: boot, pause, reset, power off {2}\(examples\/lifecycle\.playbook\.ts\)/,
  );
  assert.match(r.stdout, /• boots to ready/);
});

Deno.test("--list examples/ lists the steps of every bundled example", async () => {
  const examples: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}/examples`)) {
    if (e.name.endsWith(".playbook.ts")) examples.push(`examples/${e.name}`);
  }
  assert.ok(examples.length >= 5, examples.join(", "));
  const tmp = await Deno.makeTempDir({ prefix: "qmpkit-list-test-" });
  try {
    const r = await play(["examples/", "--list", "--reporter", "json"], { env: { TMPDIR: tmp } });
    assert.equal(r.code, 0, r.stderr);
    const listing = JSON.parse(r.stdout);
    assert.deepEqual(listing.errors, []);
    assert.deepEqual(
      listing.playbooks.map((p: { file: string }) => p.file).sort(),
      examples.sort(),
    );
    for (const p of listing.playbooks) {
      assert.equal(p.complete, true, `${p.file}: ${p.note}`);
      assert.ok(p.steps.length >= 3, `${p.file}: ${JSON.stringify(p.steps)}`);
    }
    const text = await play(["examples/", "--list"], { env: { TMPDIR: tmp } });
    assert.doesNotMatch(text.stdout, /listing stopped/);
    assert.match(text.stdout, /\(examples\/block\.playbook\.ts\)\n.*\n {2}• guest agent answers/);
    // The temp dir the listing gave t.tempDir is gone.
    assert.deepEqual([...Deno.readDirSync(tmp)], []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

const guest = await findTinyGuest().catch(() => undefined);

Deno.test({
  name: "the lifecycle example runs green on the tiny guest",
  ignore: guest === undefined,
  async fn() {
    const r = await play(["examples/lifecycle.playbook.ts", "--reporter", "json"], {
      timeoutMs: 180_000,
    });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const report = JSON.parse(r.stdout);
    assert.equal(report.counts.steps.passed, 4);
  },
});

if (guest === undefined) {
  console.error(
    "runner_test: the tiny guest is not built, so the lifecycle example test is ignored " +
      "(build it with: deno task guest)",
  );
}
