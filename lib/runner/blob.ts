/**
 * Blob reports: a run's (or one shard's) results as one JSON file, written by
 * `--reporter blob --output DIR` and merged by `deno task play merge-reports
 * DIR...` into any other report (pretty, json, junit, tap, html). Every
 * reporter can be driven from a blob alone.
 *
 * The file is `DIR/blob-<index>-of-<total>.json` for `--shard index/total`,
 * else `DIR/blob.json`. Its content (format version 1):
 *
 * ```
 * {
 *   "format": "qmpkit-blob",        // always
 *   "version": 1,                   // BLOB_VERSION; bumped on incompatible changes
 *   "runnerVersion": "0.1.0",       // RUNNER_VERSION; merge-reports refuses mixed versions
 *   "shard": { "index": 2, "total": 4 } | null,
 *   "startedAt": "2026-...Z",       // ISO 8601
 *   "durationMs": 1234,             // the shard's wall time
 *   "interrupted": false, "interruptedBy"?: "Ctrl-C" | "SIGTERM",
 *   "ok": true,                     // no failed or interrupted playbook (flaky is ok)
 *   "counts": RunCounts,            // playbooks by final status (incl. flaky), steps
 *   "config": { "retries", "repeatEach", "tags", "parallel" },
 *   "results": PlaybookResult[],    // see results.ts; JSON-safe (jsonSafeResults)
 *   "timings": { "<playbook key>": ms }  // per playbook file, for --timings
 * }
 * ```
 *
 * A `PlaybookResult` (results.ts) holds, for the final attempt: `status`
 * (`passed | failed | skipped | interrupted | flaky`), `skipReason`, `tags`,
 * `startedAt`, `durationMs`, `retry` (attempt number), `repeat`
 * (`--repeat-each` index), `worker` (parallel lane, for timelines), `steps`
 * (a tree of `StepResult`: `status`, `startMs` since the playbook's start,
 * `durationMs`, `skipReason`, `failure`), the playbook-level `failure`,
 * `cleanupFailures`, and `logs` (`t.log`, VM lifecycle and runner lines).
 * A `Failure` has the error name and message, the step path, matcher /
 * expected / actual / diff for assertions, the cause chain, `transcript`
 * (the last QMP messages, secrets redacted, oldest first), `consoleTail`
 * (the serial console's last lines) and `qemuExit` (how QEMU died).
 * `attempts` lists the earlier failed attempts (each a full PlaybookResult),
 * so a flaky playbook shows what failed before it passed.
 *
 * Playbook keys (the `timings` keys) are the playbook's path relative to the
 * working directory (or to the argument it was found under, when outside
 * it), with `/` separators: the same on every machine.
 *
 * @module
 */
import { parseJson, stringifyJson } from "../json.ts";
import { join } from "node:path";
import { ReportMergeError } from "./errors.ts";
import {
  countResults,
  jsonSafeResults,
  type PlaybookResult,
  resultsOk,
  type RunCounts,
  type RunSummary,
  type ShardSpec,
} from "./results.ts";
import { RUNNER_VERSION } from "./version.ts";

/** The `format` of every blob. */
export const BLOB_FORMAT = "qmpkit-blob";
/** The blob format version this runner writes and reads. */
export const BLOB_VERSION = 1;

/** A blob report, as written to disk (see the module documentation). */
export interface BlobReport {
  /** Always {@link BLOB_FORMAT}. */
  format: typeof BLOB_FORMAT;
  /** {@link BLOB_VERSION} of the writer. */
  version: number;
  /** The runner version of the writer. */
  runnerVersion: string;
  /** The shard, or null for an unsharded run. */
  shard: ShardSpec | null;
  /** When the run started (ISO 8601). */
  startedAt: string;
  /** Wall time, ms. */
  durationMs: number;
  /** True when interrupted. */
  interrupted: boolean;
  /** What interrupted it. */
  interruptedBy?: string;
  /** No failed or interrupted playbook. */
  ok: boolean;
  /** Counts by status. */
  counts: RunCounts;
  /** Options that shaped the results. */
  config?: RunSummary["config"];
  /** Final results (JSON-safe). */
  results: PlaybookResult[];
  /** Durations by playbook key, for `--timings`. */
  timings: Record<string, number>;
}

/** The blob of a run summary; `timings` maps playbook keys to durations. */
export function toBlob(summary: RunSummary, timings: Record<string, number> = {}): BlobReport {
  return {
    format: BLOB_FORMAT,
    version: BLOB_VERSION,
    runnerVersion: summary.runnerVersion ?? RUNNER_VERSION,
    shard: summary.shard ?? null,
    startedAt: summary.startedAt ?? new Date().toISOString(),
    durationMs: Math.round(summary.durationMs),
    interrupted: summary.interrupted,
    ...(summary.interruptedBy ? { interruptedBy: summary.interruptedBy } : {}),
    ok: summary.ok,
    counts: summary.counts,
    ...(summary.config ? { config: summary.config } : {}),
    results: jsonSafeResults(summary.results),
    timings,
  };
}

/** The file name of a blob: `blob-2-of-4.json`, or `blob.json` unsharded. */
export function blobFileName(shard: ShardSpec | null | undefined): string {
  return shard ? `blob-${shard.index}-of-${shard.total}.json` : "blob.json";
}

/** Writes `blob` into `dir` (created if needed) and returns the file's path. */
export async function writeBlob(dir: string, blob: BlobReport): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, blobFileName(blob.shard));
  await Deno.writeTextFile(path, stringifyJson(blob) + "\n");
  return path;
}

/** Parses and checks a blob's text; `source` names it in errors. */
export function parseBlob(text: string, source: string): BlobReport {
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (e) {
    throw new ReportMergeError(
      `${source}: not a blob report (invalid JSON: ${e instanceof Error ? e.message : e})`,
    );
  }
  const b = value as Partial<BlobReport> | null;
  if (typeof b !== "object" || b === null || b.format !== BLOB_FORMAT) {
    throw new ReportMergeError(
      `${source}: not a blob report (no "format": "${BLOB_FORMAT}"); ` +
        "blobs are written by --reporter blob --output DIR",
    );
  }
  if (b.version !== BLOB_VERSION) {
    throw new ReportMergeError(
      `${source}: blob format version ${b.version}, this runner reads version ${BLOB_VERSION}: ` +
        "merge with the runner version that wrote it",
    );
  }
  if (typeof b.runnerVersion !== "string" || !Array.isArray(b.results)) {
    throw new ReportMergeError(`${source}: malformed blob report (no runnerVersion or results)`);
  }
  const s = b.shard;
  if (
    s !== null && (typeof s !== "object" || !Number.isInteger(s?.index) ||
      !Number.isInteger(s?.total) || s!.index < 1 || s!.index > s!.total)
  ) {
    throw new ReportMergeError(`${source}: malformed blob report (bad shard ${JSON.stringify(s)})`);
  }
  return {
    ...b,
    timings: typeof b.timings === "object" && b.timings !== null ? b.timings : {},
  } as BlobReport;
}

/** A blob read from disk, with its path. */
export interface BlobFile {
  /** The file it was read from. */
  path: string;
  /** Its content. */
  blob: BlobReport;
}

/**
 * Reads blobs from files and directories (every `blob*.json` directly in a
 * directory, by name). Throws {@link ReportMergeError} for a directory
 * without blobs, an unreadable file or one that is not a blob.
 */
export async function readBlobs(paths: readonly string[]): Promise<BlobFile[]> {
  const out: BlobFile[] = [];
  for (const p of paths) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(p);
    } catch (e) {
      throw new ReportMergeError(`${p}: ${e instanceof Error ? e.message : e}`);
    }
    const files: string[] = [];
    if (info.isDirectory) {
      for await (const e of Deno.readDir(p)) {
        if (e.isFile && /^blob.*\.json$/.test(e.name)) files.push(join(p, e.name));
      }
      files.sort();
      if (files.length === 0) {
        throw new ReportMergeError(
          `${p}: no blob reports (blob*.json) in this directory; ` +
            "write them with --reporter blob --output DIR",
        );
      }
    } else files.push(p);
    for (const f of files) {
      let text: string;
      try {
        text = await Deno.readTextFile(f);
      } catch (e) {
        throw new ReportMergeError(`${f}: ${e instanceof Error ? e.message : e}`);
      }
      out.push({ path: f, blob: parseBlob(text, f) });
    }
  }
  return out;
}

/** The run summary a single blob describes. */
export function summaryFromBlob(blob: BlobReport): RunSummary {
  return {
    results: blob.results,
    startedAt: blob.startedAt,
    durationMs: blob.durationMs,
    interrupted: blob.interrupted,
    ...(blob.interruptedBy ? { interruptedBy: blob.interruptedBy } : {}),
    counts: countResults(blob.results),
    ok: blob.ok,
    ...(blob.shard ? { shard: blob.shard } : {}),
    runnerVersion: blob.runnerVersion,
    ...(blob.config ? { config: blob.config } : {}),
  };
}

/**
 * Merges the blobs of one run's shards into one summary: results shard by
 * shard, counts recomputed, `ok` only when every shard is. Throws
 * {@link ReportMergeError} for blobs of different runner versions, a missing
 * shard (named), a duplicated shard, shards of different totals, or several
 * unsharded blobs.
 */
export function mergeBlobs(files: readonly BlobFile[]): RunSummary {
  if (files.length === 0) throw new ReportMergeError("no blob reports to merge");
  const versions = new Map<string, string>();
  for (const f of files) {
    if (!versions.has(f.blob.runnerVersion)) versions.set(f.blob.runnerVersion, f.path);
  }
  if (versions.size > 1) {
    throw new ReportMergeError(
      `blobs from different runner versions: ${
        [...versions].map(([v, p]) => `${v} (${p})`).join(", ")
      }; re-run every shard with the same qmpkit version`,
    );
  }
  const unsharded = files.filter((f) => f.blob.shard === null);
  const sharded = files.filter((f) => f.blob.shard !== null);
  if (unsharded.length > 0 && (sharded.length > 0 || unsharded.length > 1)) {
    throw new ReportMergeError(
      `cannot merge ${unsharded.map((f) => f.path).join(", ")} with other blobs: ` +
        "an unsharded run's blob is the whole run; merge-reports merges the shards of one run",
    );
  }
  let ordered = files;
  if (sharded.length > 0) {
    const totals = new Set(sharded.map((f) => f.blob.shard!.total));
    if (totals.size > 1) {
      throw new ReportMergeError(
        `blobs from different shard counts (${
          sharded.map((f) => `${f.path}: ${f.blob.shard!.index}/${f.blob.shard!.total}`).join(", ")
        }); merge the shards of one run`,
      );
    }
    const total = [...totals][0];
    const byIndex = new Map<number, BlobFile>();
    for (const f of sharded) {
      const prev = byIndex.get(f.blob.shard!.index);
      if (prev) {
        throw new ReportMergeError(
          `shard ${f.blob.shard!.index}/${total} appears twice (${prev.path} and ${f.path})`,
        );
      }
      byIndex.set(f.blob.shard!.index, f);
    }
    const missing: number[] = [];
    for (let i = 1; i <= total; i++) if (!byIndex.has(i)) missing.push(i);
    if (missing.length > 0) {
      throw new ReportMergeError(
        `shard${missing.length > 1 ? "s" : ""} ${
          missing.map((i) => `${i}/${total}`).join(", ")
        } missing (got ${
          [...byIndex.keys()].sort((a, b) => a - b).map((i) => `${i}/${total}`).join(", ")
        }); ` +
          "did that CI job fail before uploading its blob?",
      );
    }
    ordered = [...byIndex.keys()].sort((a, b) => a - b).map((i) => byIndex.get(i)!);
  }
  const results = ordered.flatMap((f) => f.blob.results);
  const counts = countResults(results);
  const interrupted = ordered.find((f) => f.blob.interrupted);
  const starts = ordered.map((f) => f.blob.startedAt).filter(Boolean).sort();
  return {
    results,
    ...(starts.length ? { startedAt: starts[0] } : {}),
    durationMs: Math.max(...ordered.map((f) => f.blob.durationMs)),
    interrupted: interrupted !== undefined,
    ...(interrupted?.blob.interruptedBy ? { interruptedBy: interrupted.blob.interruptedBy } : {}),
    counts,
    ok: ordered.every((f) => f.blob.ok) && resultsOk(counts),
    ...(sharded.length > 0 ? { shards: ordered.map((f) => f.blob.shard!) } : {}),
    runnerVersion: ordered[0].blob.runnerVersion,
    timings: blobTimings(ordered),
    ...(ordered[0].blob.config ? { config: ordered[0].blob.config } : {}),
  };
}

/** Merged `timings` of blobs (later blobs win for the same key). */
export function blobTimings(files: readonly BlobFile[]): Record<string, number> {
  return Object.assign({}, ...files.map((f) => f.blob.timings));
}
