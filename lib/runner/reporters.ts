/**
 * Reporters for playbook runs, and {@link createReporter}, which makes them
 * by name: `pretty` (live progress on stderr), `json`, `junit` and `tap`
 * (one document on stdout at the end, so it can be redirected), `blob`
 * (a file in `outputDir` that `merge-reports` merges) and `html`
 * (`outputDir/index.html`, a self-contained page for people). Each reporter lives in
 * its own `reporter_*.ts` file and is driven by {@link RunSummary} alone at
 * the end of a run, so `merge-reports` can replay merged shards into it.
 *
 * @module
 */
import { stringifyJson } from "../json.ts";
import { redactDeep, redactText } from "../redact.ts";
import { toBlob, writeBlob } from "./blob.ts";
import { ReportOutputError } from "./errors.ts";
import { ProgressReporter } from "./progress.ts";
import { writeHtmlReport } from "./reporter_html.ts";
import { jsonReport } from "./reporter_json.ts";
import { junitReport } from "./reporter_junit.ts";
import { PrettyReporter } from "./reporter_pretty.ts";
import { tapReport } from "./reporter_tap.ts";
import type { RunObserver, RunSummary } from "./results.ts";

/** A run reporter: live callbacks plus a final summary. */
export interface Reporter extends RunObserver {
  /** The run starts with these playbooks (after sharding, tags and repeats). */
  runStart?(playbooks: { name: string; file?: string }[]): void;
  /**
   * A failed attempt will be retried (`--retries`); `playbookEnd` of the retry follows.
   * @param attempt the attempt that failed (0 for the first run)
   */
  retrying?(playbook: { index: number; name: string; file?: string }, attempt: number): void;
  /** The run ended (or merged shards are reported). */
  runEnd(summary: RunSummary): void | Promise<void>;
}

/** Where reporters write: text sinks for stdout and stderr. */
export interface ReporterOutput {
  /** Writes to stdout. */
  stdout(text: string): void;
  /** Writes to stderr. */
  stderr(text: string): void;
}

/** Names of the built-in reporters. */
export type ReporterName = "pretty" | "json" | "junit" | "tap" | "blob" | "html";

/** Every built-in reporter's name. */
export const REPORTER_NAMES: readonly ReporterName[] = [
  "pretty",
  "json",
  "junit",
  "tap",
  "blob",
  "html",
];

/** Reporters that write their document to stdout (at most one per run). */
export const STDOUT_REPORTERS: readonly ReporterName[] = ["json", "junit", "tap"];

/** Reporters that write files into {@link ReporterOptions.outputDir}. */
export const FILE_REPORTERS: readonly ReporterName[] = ["blob", "html"];

/** Options of {@link createReporter}. */
export interface ReporterOptions {
  /** Output sinks (default: `Deno.stdout` / `Deno.stderr`). */
  output?: ReporterOutput;
  /** Use ANSI colors (pretty only; default: stderr is a TTY and `NO_COLOR` is unset). */
  color?: boolean;
  /**
   * Draw a live status line (done / running / failed, elapsed), redrawn in
   * place (default: stderr is a TTY, and neither `NO_COLOR` nor `CI` is set).
   */
  live?: boolean;
  /** Playbooks may run concurrently (pretty output is then grouped per playbook). */
  parallel?: number;
  /**
   * Show whole stack traces and cause chains (pretty only). By default a
   * failure shows at most 3 stack frames, only those in the playbook's own
   * code (none inside qmpkit), and the first line of each cause it does not
   * already say.
   */
  verbose?: boolean;
  /**
   * Off a live terminal, print a plain progress line after each playbook
   * (pretty only; default true; `merge-reports` turns it off).
   */
  progressLines?: boolean;
  /** The directory file reporters (`blob`, `html`) write into (default `qmpkit-report`). */
  outputDir?: string;
}

const encoder = new TextEncoder();

function defaultOutput(): ReporterOutput {
  return {
    stdout: (t) => writeAll(Deno.stdout, t),
    stderr: (t) => writeAll(Deno.stderr, t),
  };
}

function writeAll(w: { writeSync(p: Uint8Array): number }, text: string): void {
  let data = encoder.encode(text);
  while (data.length > 0) data = data.subarray(w.writeSync(data));
}

function envSet(name: string): boolean {
  try {
    return (Deno.env.get(name) ?? "") !== "";
  } catch {
    return false;
  }
}

/** True when a live, redrawn status line suits stderr: a TTY, and no `NO_COLOR` or `CI`. */
export function liveStderr(): boolean {
  return Deno.stderr.isTerminal() && !envSet("NO_COLOR") && !envSet("CI");
}

/** Creates a built-in reporter by name. */
export function createReporter(name: ReporterName, options: ReporterOptions = {}): Reporter {
  // Every byte a reporter writes goes through the redactor (log lines, failures, stderr tails);
  // each document is made from a redacted copy of the summary (jsonReport, junitReport, ...).
  const sink = options.output ?? defaultOutput();
  const output: ReporterOutput = {
    stdout: (t) => sink.stdout(redactText(t)),
    stderr: (t) => sink.stderr(redactText(t)),
  };
  switch (name) {
    case "pretty":
      return new PrettyReporter(output, {
        color: options.color ?? (Deno.stderr.isTerminal() && !envSet("NO_COLOR")),
        live: options.live ?? liveStderr(),
        parallel: options.parallel ?? 1,
        verbose: options.verbose ?? false,
        progressLines: options.progressLines ?? true,
      });
    case "json":
      return { runEnd: (s) => output.stdout(stringifyJson(jsonReport(s), 2) + "\n") };
    case "junit":
      return { runEnd: (s) => output.stdout(junitReport(s)) };
    case "tap":
      return { runEnd: (s) => output.stdout(tapReport(s)) };
    case "blob": {
      const dir = options.outputDir ?? "qmpkit-report";
      return {
        runEnd: async (s) => {
          let path: string;
          try {
            path = await writeBlob(dir, toBlob(redactDeep(s), s.timings));
          } catch (e) {
            throw new ReportOutputError(
              dir,
              `the blob report cannot be written to ${dir}: ${e instanceof Error ? e.message : e}`,
              { cause: e },
            );
          }
          output.stderr(`blob report: ${path}\n`);
        },
      };
    }
    case "html": {
      const dir = options.outputDir ?? "qmpkit-report";
      return {
        runEnd: async (s) => {
          const path = await writeHtmlReport(dir, s);
          output.stderr(`html report: ${path}\n`);
        },
      };
    }
  }
}

/**
 * Creates the reporters named (e.g. `["pretty", "blob"]`) as one. Without
 * `pretty`, a live status line is drawn on stderr when {@link liveStderr}.
 */
export function createReporters(
  names: readonly ReporterName[],
  options: ReporterOptions = {},
): Reporter {
  const list = names.map((n) => createReporter(n, options));
  const live = options.live ?? liveStderr();
  if (!names.includes("pretty") && live) {
    list.unshift(new ProgressReporter(options.output ?? defaultOutput()));
  }
  return combineReporters(list);
}

/** One reporter that forwards every callback to each of `reporters`, in order. */
export function combineReporters(reporters: readonly Reporter[]): Reporter {
  if (reporters.length === 1) return reporters[0];
  return {
    runStart: (p) => reporters.forEach((r) => r.runStart?.(p)),
    retrying: (p, a) => reporters.forEach((r) => r.retrying?.(p, a)),
    playbookStart: (p) => reporters.forEach((r) => r.playbookStart?.(p)),
    stepStart: (p, s) => reporters.forEach((r) => r.stepStart?.(p, s)),
    stepEnd: (p, s) => reporters.forEach((r) => r.stepEnd?.(p, s)),
    log: (p, e) => reporters.forEach((r) => r.log?.(p, e)),
    playbookEnd: (p, res) => reporters.forEach((r) => r.playbookEnd?.(p, res)),
    runEnd: async (s) => {
      // Every reporter gets the summary even when one fails; the first error is rethrown.
      let error: { e: unknown } | undefined;
      for (const r of reporters) {
        try {
          await r.runEnd(s);
        } catch (e) {
          error ??= { e };
        }
      }
      if (error) throw error.e;
    },
  };
}
