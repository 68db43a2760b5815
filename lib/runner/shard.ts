/**
 * Sharding: splitting a run's playbooks over CI machines (`--shard 2/4`)
 * deterministically, so that every playbook runs in exactly one shard and
 * every machine computes the same split.
 *
 * Playbooks are identified by a key that is the same on every machine (their
 * path relative to the working directory, `/`-separated; see `blob.ts`) and
 * sorted by it with a plain code-unit comparison (no locale). Without
 * timings, shard i of n gets the i-th of n contiguous slices of that order
 * (sizes differ by at most one). With timings from an earlier run, the
 * playbooks are placed longest first, each into the least-loaded shard (ties:
 * the lower shard number; equal durations: by key); playbooks without a
 * recorded time count as the average of the recorded ones.
 *
 * @module
 */
import type { ShardSpec } from "./results.ts";

/**
 * Parses `--shard INDEX/TOTAL` (1 ≤ INDEX ≤ TOTAL). Throws a `RangeError`
 * that says what is wrong.
 */
export function parseShard(text: string): ShardSpec {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) {
    throw new RangeError(
      `--shard must be INDEX/TOTAL with whole numbers, e.g. 2/4, got "${text}"`,
    );
  }
  const index = Number(m[1]);
  const total = Number(m[2]);
  if (total < 1 || total > 1000) {
    throw new RangeError(`--shard ${text}: TOTAL must be between 1 and 1000`);
  }
  if (index < 1 || index > total) {
    throw new RangeError(
      `--shard ${text}: INDEX must be between 1 and ${total} (shards are numbered from 1)`,
    );
  }
  return { index, total };
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Assigns each key a shard number (1-based) out of `total`; see the module
 * documentation for the rules. Duplicate keys get the same shard.
 */
export function assignShards(
  keys: readonly string[],
  total: number,
  timings?: Readonly<Record<string, number>>,
): Map<string, number> {
  const sorted = [...new Set(keys)].sort(compareKeys);
  const out = new Map<string, number>();
  const known = timings ? sorted.filter((k) => Number.isFinite(timings[k]) && timings[k] >= 0) : [];
  if (!timings || known.length === 0) {
    const n = sorted.length;
    for (let s = 0; s < total; s++) {
      const from = Math.floor((s * n) / total);
      const to = Math.floor(((s + 1) * n) / total);
      for (let i = from; i < to; i++) out.set(sorted[i], s + 1);
    }
    return out;
  }
  const average = known.reduce((sum, k) => sum + timings[k], 0) / known.length;
  const knownSet = new Set(known);
  const weight = (k: string) => (knownSet.has(k) ? timings[k] : average);
  const order = sorted.map((k) => ({ k, w: weight(k) }))
    .sort((a, b) => b.w - a.w || compareKeys(a.k, b.k));
  const load = new Array<number>(total).fill(0);
  for (const { k, w } of order) {
    let best = 0;
    for (let s = 1; s < total; s++) if (load[s] < load[best]) best = s;
    load[best] += w;
    out.set(k, best + 1);
  }
  return out;
}
