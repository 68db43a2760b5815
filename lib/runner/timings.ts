/**
 * Timing files for balancing shards: `--save-timings FILE` writes the
 * durations of a run (or of merged shards), `--timings PATH` reads them back
 * from such a file, a blob report, or a directory of blob reports.
 *
 * A timing file is `{ "format": "qmpkit-timings", "version": 1, "timings":
 * { "<playbook key>": ms } }`; keys are as in `blob.ts`.
 *
 * @module
 */
import { BLOB_FORMAT, blobTimings, parseBlob, readBlobs } from "./blob.ts";
import { ReportMergeError } from "./errors.ts";
import type { PlaybookResult } from "./results.ts";

/** The `format` of a timing file. */
export const TIMINGS_FORMAT = "qmpkit-timings";

/**
 * Durations by key of final results (mean over `--repeat-each` repetitions;
 * load failures and playbooks that did not run are left out).
 */
export function collectTimings(
  results: readonly PlaybookResult[],
  keyOf: (r: PlaybookResult) => string | undefined,
): Record<string, number> {
  const sums = new Map<string, { total: number; n: number }>();
  for (const r of results) {
    const key = keyOf(r);
    if (key === undefined || r.status === "skipped" || r.failure?.step === "(load)") continue;
    const e = sums.get(key) ?? { total: 0, n: 0 };
    e.total += r.durationMs;
    e.n++;
    sums.set(key, e);
  }
  const out: Record<string, number> = {};
  for (const [k, { total, n }] of [...sums].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    out[k] = Math.round(total / n);
  }
  return out;
}

/** Writes a timing file. */
export async function writeTimings(path: string, timings: Record<string, number>): Promise<void> {
  await Deno.writeTextFile(
    path,
    JSON.stringify({ format: TIMINGS_FORMAT, version: 1, timings }, null, 2) + "\n",
  );
}

/**
 * Reads timings from a timing file, a blob report, or a directory of blob
 * reports. Throws {@link ReportMergeError} saying what is wrong.
 */
export async function readTimings(path: string): Promise<Record<string, number>> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new ReportMergeError(`--timings ${path}: ${e instanceof Error ? e.message : e}`);
  }
  if (info.isDirectory) return blobTimings(await readBlobs([path]));
  const text = await Deno.readTextFile(path);
  let value: { format?: unknown; timings?: unknown };
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ReportMergeError(
      `--timings ${path}: invalid JSON (${e instanceof Error ? e.message : e})`,
    );
  }
  if (value?.format === BLOB_FORMAT) return parseBlob(text, path).timings;
  if (value?.format !== TIMINGS_FORMAT || typeof value.timings !== "object" || !value.timings) {
    throw new ReportMergeError(
      `--timings ${path}: neither a timing file (--save-timings) nor a blob report`,
    );
  }
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(value.timings as Record<string, unknown>)) {
    if (typeof v === "number" && Number.isFinite(v) && v >= 0) out[k] = v;
  }
  return out;
}
