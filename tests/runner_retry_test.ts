/**
 * Retries, repeats, tags, focus and skips through the real CLI: a playbook
 * that passes on a retry is flaky in every reporter (and the run exits 0),
 * `--repeat-each`, `--tag` semantics, `playbook.only` / `--forbid-only`,
 * `playbook.skip` and `t.skip(reason)`, and what `--list` shows of them.
 * Playbooks use `-machine none` VMs (fast, no guest).
 */
import assert from "node:assert/strict";
import { play, withDir, writePlaybook } from "./helpers/play.ts";

/** Fails its step on the first run (per counter file), passes after. */
const FLAKY = `
const counter = Deno.env.get("FLAKY_COUNTER")!;
export default playbook({ name: "flaky", vm: { machine: "none" } }, async (t) => {
  await t.step("boots", () => t.qmp.execute("query-status"));
  await t.step("races", async () => {
    let runs = 0;
    try { runs = Number(await Deno.readTextFile(counter)); } catch { /* first run */ }
    await Deno.writeTextFile(counter, String(runs + 1));
    t.expect(runs, "earlier runs").toBeGreaterThan(0);
  });
});`;

const BROKEN = `
export default playbook({ name: "broken", vm: { machine: "none" } }, async (t) => {
  await t.step("always fails", () => t.expect("a").toBe("b"));
});`;

Deno.test("--retries: a pass after a failure is flaky in pretty, json, junit, tap and blob; exit 0", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "flaky", FLAKY);
    let n = 0;
    const run = (reporter: string, extra: string[] = []) =>
      play([file, "--retries", "2", "--reporter", reporter, ...extra], {
        env: { FLAKY_COUNTER: `${dir}/counter-${n++}` },
      });

    const pj = await run("pretty,json");
    assert.equal(pj.code, 0, pj.stderr);
    assert.match(pj.stderr, /↻ retrying flaky on a fresh VM \(retry 1\)/);
    assert.match(pj.stderr, /⚠ flaky {2}flaky \(passed on retry 1\)/);
    assert.match(
      pj.stderr,
      /Flaky \(failed, then passed on a retry\):\n {2}⚠ flaky {2}first failure: races: earlier runs: expected 0/,
    );
    assert.match(pj.stderr, /^ok \| 0 passed, 0 failed, 1 flaky playbooks/m);
    const json = JSON.parse(pj.stdout);
    assert.equal(json.ok, true);
    assert.equal(json.counts.playbooks.flaky, 1);
    assert.equal(json.counts.playbooks.passed, 0, "flaky is not a plain pass");
    const pb = json.playbooks[0];
    assert.equal(pb.status, "flaky");
    assert.equal(pb.retry, 1);
    assert.equal(pb.attempts.length, 1);
    assert.equal(pb.attempts[0].status, "failed");
    assert.equal(pb.attempts[0].steps[1].failure.step, "races");
    assert.ok(
      pb.attempts[0].steps[1].failure.transcript.length > 0,
      "the failed attempt keeps its QMP tail",
    );

    const junit = await run("junit");
    assert.equal(junit.code, 0);
    assert.match(junit.stdout, /<testsuites [^>]*tests="2" failures="0" errors="0"/);
    assert.match(junit.stdout, /<property name="qmpkit\.flaky" value="true"\/>/);
    assert.match(
      junit.stdout,
      /<testcase name="races" [^>]*><flakyFailure message="earlier runs: expected 0 to be greater than 0" type="ExpectationError">/,
    );
    assert.match(junit.stdout, /<system-out>flaky: failed 1 time\(s\), then passed on retry 1/);

    const tap = await run("tap,blob", ["--output", `${dir}/blob`]);
    assert.equal(tap.code, 0);
    assert.match(
      tap.stdout,
      /^ok 1 - flaky\n# flaky: flaky failed 1 time\(s\), then passed on retry 1$/m,
    );
    const blob = JSON.parse(await Deno.readTextFile(`${dir}/blob/blob.json`));
    assert.equal(blob.results[0].status, "flaky");
    assert.equal(blob.counts.playbooks.flaky, 1);
    assert.equal(blob.results[0].attempts[0].status, "failed");
  });
});

Deno.test("--retries: a playbook failing every time fails after N+1 attempts; without --retries no retry", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(dir, "broken", BROKEN);
    const r = await play([file, "--retries", "2", "--reporter", "pretty,json"]);
    assert.equal(r.code, 1);
    const pb = JSON.parse(r.stdout).playbooks[0];
    assert.equal(pb.status, "failed");
    assert.equal(pb.retry, 2);
    assert.equal(pb.attempts.length, 2);
    assert.equal(r.stderr.match(/↻ retrying broken/g)?.length, 2);
    const once = await play([file, "--reporter", "json"]);
    assert.equal(once.code, 1);
    assert.equal(JSON.parse(once.stdout).playbooks[0].attempts, undefined);
    const bad = await play([file, "--retries=-1"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--retries must be a non-negative integer, got "-1"/);
  });
});

Deno.test("--repeat-each N runs each playbook N times, each on its own VM", async () => {
  await withDir(async (dir) => {
    const file = await writePlaybook(
      dir,
      "pid",
      `export default playbook({ name: "pid", vm: { machine: "none" } }, async (t) => {
  await t.step("pid", () => t.log(String(t.vm.pid)));
});`,
    );
    const r = await play([file, "--repeat-each", "3", "--reporter", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.counts.playbooks.passed, 3);
    assert.deepEqual(report.playbooks.map((p: { repeat: number }) => p.repeat), [0, 1, 2]);
    const pids = report.playbooks.map((p: { logs: { source: string; message: string }[] }) =>
      p.logs.find((l) => l.source === "playbook")!.message
    );
    assert.equal(new Set(pids).size, 3, "a fresh VM each time");
    const bad = await play([file, "--repeat-each", "0"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--repeat-each must be a positive integer, got "0"/);
  });
});

async function writeTagged(dir: string): Promise<void> {
  for (
    const [name, tags] of [["blk", ["block"]], ["blkslow", ["block", "slow"]], ["net", ["net"]], [
      "none",
      [],
    ]] as const
  ) {
    await writePlaybook(
      dir,
      name,
      `export default playbook({ name: "${name}", vm: { machine: "none" }, tags: ${
        JSON.stringify(tags)
      } }, async (t) => {
  await t.step("one", () => {});
});`,
    );
  }
}

Deno.test("--tag: includes OR'ed, excludes AND'ed; nothing selected exits 2; --list shows tags", async () => {
  await withDir(async (dir) => {
    await writeTagged(dir);
    const names = async (args: string[]) => {
      const r = await play([dir, "--list", "--reporter", "json", ...args]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).playbooks.map((p: { name: string }) => p.name);
    };
    assert.deepEqual(await names(["--tag", "block"]), ["blk", "blkslow"]);
    assert.deepEqual(await names(["--tag", "block", "--tag", "net"]), ["blk", "blkslow", "net"]);
    assert.deepEqual(await names(["--tag", "block", "--tag", "!slow"]), ["blk"]);
    assert.deepEqual(await names(["--tag", "!slow", "--tag", "!net"]), ["blk", "none"]);
    const run = await play([dir, "--tag", "block", "--tag", "!slow", "--reporter", "json"]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      JSON.parse(run.stdout).playbooks.map((
        p: { name: string; tags: string[] },
      ) => [p.name, p.tags]),
      [["blk", ["block"]]],
    );
    const none = await play([dir, "--tag", "nope"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^error: --tag nope selects no playbook \(of 4\)/m);
    const bad = await play([dir, "--tag", "a b"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--tag "a b": give one tag/);
    const list = await play([dir, "--list"]);
    assert.match(list.stdout, /^blkslow {2}\(.*blkslow\.playbook\.ts\) {2}\[tags: block, slow\]$/m);
  });
});

Deno.test("playbook.only runs only the focused playbooks; --forbid-only exits 2 naming the files", async () => {
  await withDir(async (dir) => {
    await writeTagged(dir);
    await writePlaybook(
      dir,
      "focus",
      `export default playbook.only({ name: "focus", vm: { machine: "none" } }, async (t) => {
  await t.step("one", () => {});
});`,
    );
    const r = await play([dir, "--reporter", "json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).playbooks.map((p: { name: string }) => p.name), [
      "focus",
    ]);
    const ci = await play([dir, "--forbid-only"]);
    assert.equal(ci.code, 2);
    assert.match(ci.stderr, /^error: --forbid-only: playbook\.only in .*focus\.playbook\.ts$/m);
    const list = await play([dir, "--list"]);
    assert.match(list.stdout, /^focus {2}\(.*\) {2}\[only\]$/m);
  });
});

Deno.test("playbook.skip and t.skip(reason): skipped with the reason, later steps not run, cleanups run", async () => {
  await withDir(async (dir) => {
    const marker = `${dir}/cleanup.txt`;
    await writePlaybook(
      dir,
      "skips",
      `export default playbook({ name: "skips", vm: { machine: "none" } }, async (t) => {
  t.cleanup(() => Deno.writeTextFile(${JSON.stringify(marker)}, "cleaned"));
  await t.step("first", () => {});
  await t.step("outer", async () => {
    await t.step("needs kvm", async () => {
      await t.eventually(() => t.skip("KVM is not available"));
    });
    await t.step("after, inside", () => {});
  });
  await t.step("after", () => {});
});`,
    );
    await writePlaybook(
      dir,
      "whole",
      `export default playbook.skip({ name: "whole", vm: { machine: "none" } }, async (t) => {
  await t.step("never", () => {});
});`,
    );
    await writePlaybook(
      dir,
      "early",
      `export default playbook({ name: "early", vm: { machine: "none" } }, (t) => {
  t.skip("not on this host");
});`,
    );
    const r = await play([dir, "--reporter", "pretty,json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    const by = Object.fromEntries(report.playbooks.map((p: { name: string }) => [p.name, p]));
    assert.equal(by.skips.status, "skipped");
    assert.equal(by.skips.skipReason, "KVM is not available");
    assert.deepEqual(
      by.skips.steps.map((
        s: { name: string; status: string; steps: { name: string; status: string }[] },
      ) => [s.name, s.status, s.steps.map((x) => [x.name, x.status])]),
      [["first", "passed", []], ["outer", "skipped", [["needs kvm", "skipped"]]]],
      "the skipping step and its parent are skipped; the steps after it do not run",
    );
    assert.equal(await Deno.readTextFile(marker), "cleaned");
    assert.equal(by.whole.status, "skipped");
    assert.equal(by.whole.skipReason, "playbook.skip");
    assert.equal(by.early.skipReason, "not on this host");
    assert.deepEqual(report.counts.playbooks, {
      passed: 0,
      failed: 0,
      skipped: 3,
      interrupted: 0,
      flaky: 0,
    });
    assert.match(r.stderr, /– needs kvm {2}\(KVM is not available\)/);
    assert.doesNotMatch(r.stderr, /after/);
    assert.deepEqual(by.whole.logs, [], "playbook.skip launches no VM");

    const list = await play([dir, "--list"]);
    assert.match(list.stdout, /^whole {2}\(.*\) {2}\[skipped: playbook\.skip\]$/m);
    assert.match(list.stdout, /^early {2}\(.*\) {2}\[skipped: not on this host\]$/m);
  });
});
