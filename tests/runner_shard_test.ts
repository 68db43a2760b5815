/**
 * Sharding and merging through the real CLI: a 4-shard run plus
 * `merge-reports` has the totals and exit status of one unsharded run; the
 * split does not depend on the working directory; bad input exits 2 with a
 * clear message. Playbooks use `-machine none` VMs (fast, no guest).
 */
import assert from "node:assert/strict";
import { findTinyGuest } from "../lib/guest.ts";
import { play, withDir, writePlaybook } from "./helpers/play.ts";

const guest = await findTinyGuest().catch(() => undefined);
/** The examples boot the tiny guest under TCG (about a minute per run): opt in. */
const slow = (Deno.env.get("QMPKIT_SLOW_TESTS") ?? "") !== "";

/** Six fast playbooks: passes, a failure, a playbook.skip and a t.skip. */
async function writeSet(dir: string): Promise<void> {
  for (const n of ["alpha", "bravo", "charlie"]) {
    await writePlaybook(
      dir,
      n,
      `export default playbook({ name: "${n}", vm: { machine: "none" } }, async (t) => {
  await t.step("status", async () => t.expect((await t.qmp.execute("query-status")).status).toBe("running"));
  await t.step("version", () => t.qmp.execute("query-version"));
});`,
    );
  }
  await writePlaybook(
    dir,
    "delta",
    `export default playbook({ name: "delta", vm: { machine: "none" } }, async (t) => {
  await t.step("fails", () => t.expect(1).toBe(2));
});`,
  );
  await writePlaybook(
    dir,
    "echo",
    `export default playbook.skip({ name: "echo", vm: { machine: "none" } }, async (t) => {
  await t.step("never", () => {});
});`,
  );
  await writePlaybook(
    dir,
    "foxtrot",
    `export default playbook({ name: "foxtrot", vm: { machine: "none" } }, async (t) => {
  await t.step("first", () => {});
  await t.step("skips", () => t.skip("not here"));
  await t.step("never", () => {});
});`,
  );
}

function names(report: { playbooks: { name: string }[] }): string[] {
  return report.playbooks.map((p) => p.name).sort();
}

Deno.test("4 shards + merge-reports give the totals and exit status of one unsharded run", async () => {
  await withDir(async (dir) => {
    await writeSet(dir);
    const whole = await play([dir, "--reporter", "json"]);
    assert.equal(whole.code, 1, whole.stderr);
    const expected = JSON.parse(whole.stdout);
    assert.deepEqual(expected.counts.playbooks, {
      passed: 3,
      failed: 1,
      skipped: 2,
      interrupted: 0,
      flaky: 0,
    });

    const blobs = `${dir}/blobs`;
    // Two at a time: the machine has two cores shared with others.
    const shards = [];
    for (const pair of [[1, 2], [3, 4]]) {
      shards.push(
        ...await Promise.all(
          pair.map((i) =>
            play([dir, "--shard", `${i}/4`, "--reporter", "blob", "--output", blobs])
          ),
        ),
      );
    }
    const seen: string[] = [];
    for (const [i, r] of shards.entries()) {
      assert.match(r.stderr, new RegExp(`shard ${i + 1}/4: \\d of 6 playbooks`), r.stderr);
      const blob = JSON.parse(await Deno.readTextFile(`${blobs}/blob-${i + 1}-of-4.json`));
      assert.deepEqual(blob.shard, { index: i + 1, total: 4 });
      seen.push(...blob.results.map((p: { name: string }) => p.name));
      // A shard's exit status is its own: 1 only for the shard with the failure.
      assert.equal(
        r.code,
        blob.results.some((p: { status: string }) => p.status === "failed") ? 1 : 0,
      );
    }
    assert.deepEqual(seen.sort(), names(expected), "every playbook ran in exactly one shard");

    const merged = await play(["merge-reports", blobs, "--reporter", "json"]);
    assert.equal(merged.code, whole.code, merged.stderr);
    const report = JSON.parse(merged.stdout);
    assert.deepEqual(report.counts, expected.counts);
    assert.deepEqual(names(report), names(expected));
    assert.deepEqual(report.shards.map((s: { index: number }) => s.index), [1, 2, 3, 4]);
    const fox = report.playbooks.find((p: { name: string }) => p.name === "foxtrot");
    assert.equal(fox.status, "skipped");
    assert.equal(fox.skipReason, "not here");

    // The same totals in the other formats, and pretty replays the run.
    const junit = await play(["merge-reports", blobs, "--reporter", "junit"]);
    const wholeJunit = await play([dir, "--reporter", "junit"]);
    const totals = (xml: string) => /<testsuites [^>]*>/.exec(xml)![0].replace(/ time="[^"]*"/, "");
    assert.equal(totals(junit.stdout), totals(wholeJunit.stdout));
    const pretty = await play(["merge-reports", blobs]);
    assert.equal(pretty.code, 1);
    assert.match(pretty.stderr, /✗ delta/);
    assert.match(pretty.stderr, /expected 1 to be 2|Expected/);
    assert.match(
      pretty.stderr,
      /FAILED \| 3 passed, 1 failed, 2 skipped playbooks \| 7 passed, 1 failed, 1 skipped steps/,
    );
  });
});

Deno.test("the split is the same from another working directory (keys are relative paths)", async () => {
  await withDir(async (dir) => {
    await writeSet(dir);
    const list = async (args: string[], cwd?: string) => {
      const r = await play([...args, "--list", "--reporter", "json"], { cwd });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).playbooks.map((p: { name: string }) => p.name);
    };
    for (const i of [1, 2, 3]) {
      const fromRoot = await list([dir, "--shard", `${i}/3`]);
      const fromDir = await list([".", "--shard", `${i}/3`], dir);
      assert.deepEqual(fromRoot, fromDir);
      assert.equal(fromRoot.length, 2);
    }
  });
});

Deno.test("--timings balances shards by recorded durations; --save-timings writes them", async () => {
  await withDir(async (dir) => {
    await writeSet(dir);
    const saved = `${dir}/timings.json`;
    const r = await play([
      `${dir}/alpha.playbook.ts`,
      `${dir}/bravo.playbook.ts`,
      "--save-timings",
      saved,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const file = JSON.parse(await Deno.readTextFile(saved));
    assert.equal(file.format, "qmpkit-timings");
    assert.deepEqual(Object.keys(file.timings).sort(), ["alpha.playbook.ts", "bravo.playbook.ts"]);
    // delta is long: alone in shard 1, the five others in shard 2.
    await Deno.writeTextFile(
      saved,
      JSON.stringify({
        format: "qmpkit-timings",
        version: 1,
        timings: Object.fromEntries(
          ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"].map((
            n,
          ) => [`${n}.playbook.ts`, n === "delta" ? 100_000 : 10]),
        ),
      }),
    );
    const one = await play([
      ".",
      "--list",
      "--shard",
      "1/2",
      "--timings",
      saved,
      "--reporter",
      "json",
    ], { cwd: dir });
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(JSON.parse(one.stdout).playbooks.map((p: { name: string }) => p.name), [
      "delta",
    ]);
    const two = await play([".", "--list", "--shard", "2/2", "--timings", saved], { cwd: dir });
    assert.match(two.stdout, /^shard 2\/2: 5 of 6 playbooks/);
  });
});

Deno.test("bad --shard, --output, --timings and merge input: one clear error, exit 2", async () => {
  await withDir(async (dir) => {
    await writeSet(dir);
    for (
      const [shard, message] of [
        ["0/4", /--shard 0\/4: INDEX must be between 1 and 4 \(shards are numbered from 1\)/],
        ["5/4", /--shard 5\/4: INDEX must be between 1 and 4/],
        ["x", /--shard must be INDEX\/TOTAL with whole numbers, e\.g\. 2\/4, got "x"/],
      ] as const
    ) {
      const r = await play([dir, "--shard", shard]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack");
    }
    // An output directory that cannot be written: under a regular file (root ignores modes).
    await Deno.writeTextFile(`${dir}/file`, "");
    const out = await play([dir, "--reporter", "blob", "--output", `${dir}/file/report`]);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /^error: --output .*\/file\/report: not a writable directory \(/m);
    assert.doesNotMatch(out.stderr, /Usage:/);
    // The output directory replaced by a file during the run: the blob cannot be written.
    const gone = `${dir}/gone`;
    const saboteur = await writePlaybook(
      dir,
      "saboteur",
      `export default playbook({ name: "saboteur", vm: { machine: "none" } }, async (t) => {
  await t.step("replaces the output dir", async () => {
    await Deno.remove(${JSON.stringify(gone)}, { recursive: true });
    await Deno.writeTextFile(${JSON.stringify(gone)}, "");
  });
});`,
    );
    const late = await play([saboteur, "--reporter", "pretty,blob", "--output", gone]);
    assert.equal(late.code, 2, late.stderr);
    assert.match(late.stderr, /^ok \| 1 passed/m, "the other reporters still report");
    assert.match(late.stderr, /^error: the blob report cannot be written to .*\/gone: /m);
    await Deno.remove(saboteur);
    const timings = await play([dir, "--shard", "1/2", "--timings", `${dir}/file`]);
    assert.equal(timings.code, 2);
    assert.match(timings.stderr, /--timings .*file: invalid JSON/);

    // Blobs: one shard of 3 missing, one duplicated, another runner version.
    const blobs = `${dir}/blobs`;
    for (const i of [1, 3]) {
      const r = await play([
        `${dir}/alpha.playbook.ts`,
        `${dir}/echo.playbook.ts`,
        `${dir}/bravo.playbook.ts`,
        "--shard",
        `${i}/3`,
        "--reporter",
        "blob",
        "--output",
        blobs,
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    const missing = await play(["merge-reports", blobs]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^error: merge-reports: shard 2\/3 missing \(got 1\/3, 3\/3\)/m);
    const dup = await play(["merge-reports", blobs, `${blobs}/blob-1-of-3.json`]);
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /shard 1\/3 appears twice/);
    const blob = JSON.parse(await Deno.readTextFile(`${blobs}/blob-3-of-3.json`));
    blob.runnerVersion = "0.0.1";
    await Deno.writeTextFile(`${blobs}/blob-3-of-3.json`, JSON.stringify(blob));
    const versions = await play(["merge-reports", blobs]);
    assert.equal(versions.code, 2);
    assert.match(
      versions.stderr,
      /different runner versions: 0\.1\.0 \(.*blob-1-of-3\.json\), 0\.0\.1 \(.*blob-3-of-3\.json\)/,
    );
    const empty = await play(["merge-reports", `${dir}/nothing-here`]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /nothing-here: No such file/);
    const notBlob = await play(["merge-reports", `${dir}/alpha.playbook.ts`]);
    assert.equal(notBlob.code, 2);
    assert.match(notBlob.stderr, /alpha\.playbook\.ts: not a blob report/);
    const badReporter = await play(["merge-reports", blobs, "--reporter", "json,tap"]);
    assert.equal(badReporter.code, 2);
    assert.match(badReporter.stderr, /json and tap both write to stdout/);
  });
});

Deno.test("the bundled examples: 4 shards of --list partition the whole list", async () => {
  const list = async (args: string[]) => {
    const r = await play(["examples/", "--list", "--reporter", "json", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).playbooks.map((p: { file: string }) => p.file) as string[];
  };
  const whole = await list([]);
  const parts = [];
  for (const i of [1, 2, 3, 4]) parts.push(await list(["--shard", `${i}/4`]));
  assert.deepEqual(parts.flat().sort(), [...whole].sort());
  assert.equal(new Set(parts.flat()).size, whole.length, "no playbook in two shards");
  assert.ok(parts.every((p) => p.length >= 1), `${whole.length} examples over 4 shards by count`);
});

Deno.test({
  name:
    "the bundled examples: 4 shards + merge-reports equal one unsharded run (QMPKIT_SLOW_TESTS=1)",
  ignore: guest === undefined || !slow,
  async fn() {
    await withDir(async (dir) => {
      const whole = await play(["examples/", "--reporter", "json"], { timeoutMs: 300_000 });
      assert.equal(whole.code, 0, whole.stderr);
      for (const pair of [[1, 2], [3, 4]]) {
        const runs = await Promise.all(
          pair.map((i) =>
            play(["examples/", "--shard", `${i}/4`, "--reporter", "blob", "--output", dir], {
              timeoutMs: 300_000,
            })
          ),
        );
        for (const r of runs) assert.equal(r.code, 0, r.stderr);
      }
      const merged = await play(["merge-reports", dir, "--reporter", "json"]);
      assert.equal(merged.code, 0, merged.stderr);
      const a = JSON.parse(whole.stdout);
      const b = JSON.parse(merged.stdout);
      assert.deepEqual(b.counts, a.counts);
      assert.deepEqual(names(b), names(a));
    });
  },
});

Deno.test("merge-reports and sharding usage: --help, no blobs, --timings without --shard, --output without a file reporter", async () => {
  const help = await play(["merge-reports", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: deno task play merge-reports/);
  for (
    const [args, message] of [
      [["merge-reports"], /no blob reports given/],
      [["merge-reports", "x", "--nope"], /Unknown option '--nope'/],
      [["merge-reports", "x", "--output", "y"], /--output is where file reporters write/],
      [["examples/", "--timings", "t.json"], /--timings balances shards: use it with --shard I\/N/],
      [
        ["examples/", "--output", "y"],
        /--output is where file reporters write: add --reporter blob/,
      ],
      [["examples/", "--reporter", "json,junit"], /json and junit both write to stdout; pick one/],
    ] as const
  ) {
    const r = await play([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});
