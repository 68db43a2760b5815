/**
 * `deno task play merge-reports DIR...`: merges the blob reports of a
 * sharded run (one per CI job) into one report, with the totals and exit
 * status of one unsharded run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { mergeBlobs, readBlobs } from "../../lib/runner/blob.ts";
import { ReportMergeError, ReportOutputError } from "../../lib/runner/errors.ts";
import { replay } from "../../lib/runner/replay.ts";
import { createReporters, REPORTER_NAMES } from "../../lib/runner/reporters.ts";
import { writeTimings } from "../../lib/runner/timings.ts";
import { writeErr, writeOut } from "./common.ts";
import { ensureWritableDir, parseReporters, UsageError, writesFiles } from "./run_options.ts";

/** `merge-reports --help`. */
export const MERGE_USAGE = `Usage: deno task play merge-reports [options] <blob-dir|blob-file>...

Merges the blob reports of a sharded run (--reporter blob --output DIR on each shard)
into one report. Every shard 1..N of one run must be there, once, from the same
qmpkit version.

Options:
  --reporter NAMES     pretty (default, on stderr) | json | junit | tap (on stdout) |
                       blob (one merged blob in --output) | html (DIR/index.html in
                       --output); several with commas
  --output DIR         where file reporters write (default qmpkit-report)
  --save-timings FILE  write the playbooks' durations to FILE, for --timings next time
  -v, --verbose        show whole stack traces and cause chains of failures
  -h, --help           show this help

Exit status: 0 all passed (flaky ones included), 1 failures or an interrupted shard,
2 usage error or blobs that cannot be merged (missing or duplicated shard, different
qmpkit versions).
`;

/** Runs `merge-reports` and resolves with the exit code. */
export async function mergeCommand(argv: string[]): Promise<number> {
  let values;
  let positionals: string[];
  let names;
  try {
    const parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        reporter: { type: "string", default: "pretty" },
        output: { type: "string" },
        "save-timings": { type: "string" },
        verbose: { type: "boolean", short: "v", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    values = parsed.values;
    positionals = parsed.positionals;
    if (values.help) {
      writeOut(MERGE_USAGE);
      return 0;
    }
    names = parseReporters(values.reporter, REPORTER_NAMES);
    if (positionals.length === 0) {
      throw new UsageError("no blob reports given (e.g. merge-reports all-blobs/)");
    }
    if (values.output !== undefined && !writesFiles(names)) {
      throw new UsageError(
        `--output is where file reporters write: add --reporter blob or html (got ${values.reporter})`,
      );
    }
  } catch (e) {
    writeErr(`error: ${e instanceof Error ? e.message : e}\n\n${MERGE_USAGE}`);
    return 2;
  }
  const output = values.output ?? "qmpkit-report";
  let summary;
  try {
    summary = mergeBlobs(await readBlobs(positionals));
    if (writesFiles(names)) await ensureWritableDir("--output", output);
  } catch (e) {
    if (e instanceof ReportMergeError || e instanceof UsageError) {
      writeErr(`error: merge-reports: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  // The merged report is not a shard (its blob is the whole run).
  const { shard: _shard, ...merged } = summary;
  try {
    await replay(
      merged,
      createReporters(names, {
        verbose: values.verbose,
        outputDir: output,
        live: false,
        progressLines: false,
      }),
    );
  } catch (e) {
    if (!(e instanceof ReportOutputError)) throw e;
    writeErr(`error: merge-reports: ${e.message}\n`);
    return 2;
  }
  if (values["save-timings"]) {
    try {
      await writeTimings(values["save-timings"], merged.timings ?? {});
    } catch (e) {
      writeErr(
        `error: --save-timings ${values["save-timings"]}: ${e instanceof Error ? e.message : e}\n`,
      );
      return 2;
    }
  }
  return merged.ok ? 0 : 1;
}
