/**
 * Sharding, tags and blob merging as pure functions: a property test of the
 * shard split over random sets, the `--shard` and `--tag` grammars, and the
 * merge errors (versions, missing and duplicated shards).
 */
import assert from "node:assert/strict";
import { BLOB_VERSION, type BlobFile, mergeBlobs, parseBlob, toBlob } from "../lib/runner/blob.ts";
import { ReportMergeError } from "../lib/runner/errors.ts";
import { countResults, type PlaybookResult, type RunSummary } from "../lib/runner/results.ts";
import { assignShards, parseShard } from "../lib/runner/shard.ts";
import { parseTags } from "../lib/runner/tags.ts";
import { RUNNER_VERSION } from "../lib/runner/version.ts";

/** A small seeded PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(list: T[], rand: () => number): T[] {
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

Deno.test("shards: every playbook in exactly one shard, the union is the whole set, stable under reordering (property)", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const rand = prng(seed);
    const n = Math.floor(rand() * 40);
    const keys = new Set<string>();
    while (keys.size < n) {
      keys.add(
        `${["examples", "tests/pb", "a/b/c"][Math.floor(rand() * 3)]}/p${
          Math.floor(rand() * 1000)
        }.playbook.ts`,
      );
    }
    const list = [...keys];
    const total = 1 + Math.floor(rand() * 8);
    const withTimings = rand() < 0.5;
    const timings: Record<string, number> = {};
    if (withTimings) {
      // Some playbooks have no recorded time (new ones): they count as the average.
      for (const k of list) if (rand() < 0.8) timings[k] = Math.floor(rand() * 60_000);
    }
    const a = assignShards(list, total, withTimings ? timings : undefined);
    const b = assignShards(shuffle(list, rand), total, withTimings ? timings : undefined);
    const why = `seed ${seed}, ${n} playbooks, ${total} shards, timings: ${withTimings}`;
    assert.equal(a.size, list.length, why);
    for (const k of list) {
      const s = a.get(k)!;
      assert.ok(Number.isInteger(s) && s >= 1 && s <= total, why);
      assert.equal(b.get(k), s, `the split does not depend on discovery order: ${why}`);
    }
    const union = new Set<string>();
    for (let s = 1; s <= total; s++) {
      for (const k of list) if (a.get(k) === s) union.add(k);
    }
    assert.deepEqual([...union].sort(), [...list].sort(), why);
    const sizes = Array.from({ length: total }, (_, s) => list.filter((k) => a.get(k) === s + 1));
    if (!withTimings || Object.keys(timings).length === 0) {
      const counts = sizes.map((x) => x.length);
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `by count: ${counts} (${why})`);
    } else {
      // Greedy longest-first: no shard exceeds the lightest by more than the longest playbook.
      const known = Object.values(timings);
      const avg = known.reduce((x, y) => x + y, 0) / known.length;
      const w = (k: string) => (k in timings ? timings[k] : avg);
      const loads = sizes.map((x) => x.reduce((sum, k) => sum + w(k), 0));
      const longest = Math.max(0, ...list.map(w));
      assert.ok(Math.max(...loads) - Math.min(...loads) <= longest + 1e-6, `${loads} (${why})`);
    }
  }
});

Deno.test("shards: balanced by recorded durations, longest first into the least-loaded shard", () => {
  const timings = {
    "a.playbook.ts": 100,
    "b.playbook.ts": 60,
    "c.playbook.ts": 50,
    "d.playbook.ts": 10,
  };
  const s = assignShards(Object.keys(timings), 2, timings);
  // 100 → 1; 60 → 2; 50 → 2 (60 < 100); 10 → 1 (100 < 110).
  assert.deepEqual(Object.fromEntries(s), {
    "a.playbook.ts": 1,
    "b.playbook.ts": 2,
    "c.playbook.ts": 2,
    "d.playbook.ts": 1,
  });
  // By count: contiguous slices of the sorted keys.
  assert.deepEqual(Object.fromEntries(assignShards(["d", "c", "b", "a"], 2)), {
    a: 1,
    b: 1,
    c: 2,
    d: 2,
  });
  // More shards than playbooks: some shards are empty, none gets a playbook twice.
  const few = assignShards(["x", "y"], 4);
  assert.equal(new Set(few.values()).size, 2);
});

Deno.test("--shard grammar: INDEX/TOTAL, 1-based, clear errors", () => {
  assert.deepEqual(parseShard("2/4"), { index: 2, total: 4 });
  assert.deepEqual(parseShard(" 1 / 1 "), { index: 1, total: 1 });
  assert.throws(
    () => parseShard("0/4"),
    /INDEX must be between 1 and 4 \(shards are numbered from 1\)/,
  );
  assert.throws(() => parseShard("5/4"), /INDEX must be between 1 and 4/);
  assert.throws(() => parseShard("x"), /INDEX\/TOTAL with whole numbers, e\.g\. 2\/4, got "x"/);
  assert.throws(() => parseShard("1/0"), /TOTAL must be between 1 and 1000/);
  assert.throws(() => parseShard("1.5/4"), /whole numbers/);
  assert.throws(() => parseShard("-1/4"), /whole numbers/);
});

Deno.test("--tag: includes are OR'ed, excludes AND'ed, no include means everything", () => {
  const f = parseTags(["block", "net", "!slow", "!flaky"]);
  assert.equal(f.matches(["block"]), true);
  assert.equal(f.matches(["net", "other"]), true);
  assert.equal(f.matches(["block", "slow"]), false);
  assert.equal(f.matches(["net", "flaky"]), false);
  assert.equal(f.matches(["other"]), false);
  assert.equal(f.matches(undefined), false);
  const only = parseTags(["!slow"]);
  assert.equal(only.matches(undefined), true);
  assert.equal(only.matches(["slow"]), false);
  assert.throws(() => parseTags(["a,b"]), /one tag/);
  assert.throws(() => parseTags(["!"]), /one tag/);
  assert.throws(() => parseTags([""]), /one tag/);
});

Deno.test("RUNNER_VERSION is deno.json's version", async () => {
  const json = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(RUNNER_VERSION, json.version);
});

function result(name: string, status: PlaybookResult["status"]): PlaybookResult {
  return {
    name,
    file: `${name}.playbook.ts`,
    status,
    durationMs: 12.4,
    steps: [{
      name: "s",
      path: ["s"],
      status: status === "failed" ? "failed" : "passed",
      durationMs: 1,
      steps: [],
    }],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
}

function shardBlob(
  index: number,
  total: number,
  results: PlaybookResult[],
  version = RUNNER_VERSION,
): BlobFile {
  const counts = countResults(results);
  const summary: RunSummary = {
    results,
    durationMs: 100 * index,
    interrupted: false,
    counts,
    ok: counts.playbooks.failed === 0,
    shard: { index, total },
    runnerVersion: version,
  };
  const blob = parseBlob(
    JSON.stringify(toBlob(summary, { [`${results[0]?.name}`]: 5 })),
    `b${index}`,
  );
  return { path: `dir/blob-${index}-of-${total}.json`, blob };
}

Deno.test("mergeBlobs: totals and ok of all shards, in shard order", () => {
  const merged = mergeBlobs([
    shardBlob(2, 3, [result("c", "failed")]),
    shardBlob(1, 3, [result("a", "passed"), result("b", "flaky")]),
    shardBlob(3, 3, [result("d", "skipped")]),
  ]);
  assert.deepEqual(merged.results.map((r) => r.name), ["a", "b", "c", "d"]);
  assert.deepEqual(merged.counts.playbooks, {
    passed: 1,
    failed: 1,
    skipped: 1,
    interrupted: 0,
    flaky: 1,
  });
  assert.equal(merged.ok, false);
  assert.equal(merged.durationMs, 300, "the longest shard's wall time");
  assert.deepEqual(merged.shards, [{ index: 1, total: 3 }, { index: 2, total: 3 }, {
    index: 3,
    total: 3,
  }]);
  assert.deepEqual(merged.timings, { a: 5, c: 5, d: 5 });
});

Deno.test("mergeBlobs: missing, duplicated and mixed shards, other runner versions are clear errors", () => {
  const err = (files: BlobFile[], re: RegExp) =>
    assert.throws(
      () => mergeBlobs(files),
      (e: unknown) => e instanceof ReportMergeError && re.test(e.message),
    );
  err(
    [shardBlob(1, 4, [result("a", "passed")]), shardBlob(3, 4, [result("c", "passed")])],
    /shards 2\/4, 4\/4 missing \(got 1\/4, 3\/4\)/,
  );
  err([
    shardBlob(1, 2, [result("a", "passed")]),
    shardBlob(1, 2, [result("a", "passed")]),
    shardBlob(2, 2, [result("b", "passed")]),
  ], /shard 1\/2 appears twice \(dir\/blob-1-of-2\.json and dir\/blob-1-of-2\.json\)/);
  err(
    [shardBlob(1, 2, [result("a", "passed")]), shardBlob(2, 3, [result("b", "passed")])],
    /different shard counts/,
  );
  err(
    [shardBlob(1, 2, [result("a", "passed")]), shardBlob(2, 2, [result("b", "passed")], "0.0.9")],
    /different runner versions: 0\.1\.0 \(dir\/blob-1-of-2\.json\), 0\.0\.9 \(dir\/blob-2-of-2\.json\)/,
  );
  err([], /no blob reports/);
  assert.throws(() => parseBlob("{}", "x.json"), /x\.json: not a blob report/);
  assert.throws(() => parseBlob("nope", "x.json"), /x\.json: not a blob report \(invalid JSON/);
  assert.throws(
    () => parseBlob(JSON.stringify({ format: "qmpkit-blob", version: BLOB_VERSION + 1 }), "x.json"),
    /blob format version 2, this runner reads version 1/,
  );
});

Deno.test("blobs are JSON-safe: kept VMs lose their machine object, durations are whole ms", () => {
  const r = result("a", "failed");
  r.kept.push({ label: "vm", pid: 1, socketPath: "/x", machine: {} as never });
  r.attempts = [result("a", "failed")];
  const blob = toBlob({
    results: [r],
    durationMs: 1.6,
    interrupted: false,
    counts: countResults([r]),
    ok: false,
  });
  assert.deepEqual(blob.results[0].kept, [{ label: "vm", pid: 1, socketPath: "/x" }]);
  assert.equal(blob.results[0].durationMs, 12);
  assert.equal(blob.results[0].attempts![0].durationMs, 12);
  assert.equal(blob.shard, null);
  assert.equal(blob.runnerVersion, RUNNER_VERSION);
});
