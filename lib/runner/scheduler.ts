/**
 * Running many playbooks: a queue worked by `parallel` workers, each playbook
 * on a fresh VM, with retries (`--retries`: a failed playbook runs again on a
 * fresh VM; a pass after a failure is `flaky`), `--bail`, and interruption.
 * One playbook run is `engine.ts`'s {@link runPlaybook}.
 *
 * @module
 */
import { runPlaybook, type RunPlaybookOptions } from "./engine.ts";
import type { Playbook } from "./playbook.ts";
import type { Reporter } from "./reporters.ts";
import type { PlaybookInfo, PlaybookResult } from "./results.ts";

/** One playbook run of a schedule (a playbook file, or one repetition of it). */
export interface RunUnit {
  /** The playbook, when its file loaded. */
  playbook?: Playbook;
  /** The result to report without running (a load failure, or a skip decided by the caller). */
  result?: PlaybookResult;
  /** The file, as shown in reports. */
  file: string;
  /** With `--repeat-each`: which repetition (0-based). */
  repeat?: number;
  /** Record QMP messages to this file (retries write `NAME.retry-N.jsonl` next to it). */
  recordFile?: string;
}

/** Options of {@link runPlaybooks}. */
export interface RunPlaybooksOptions extends
  Pick<
    RunPlaybookOptions,
    | "qmp"
    | "retry"
    | "tls"
    | "ssh"
    | "timeout"
    | "stepTimeout"
    | "filter"
    | "signal"
    | "keepVm"
    | "ringSize"
  > {
  /** Run up to this many playbooks at once (default 1). */
  parallel?: number;
  /** Re-run a failed playbook on a fresh VM up to this many times (default 0). */
  retries?: number;
  /** Stop starting playbooks after the first one that failed (after its retries). */
  bail?: boolean;
  /** Receives live progress, including `retrying`. */
  reporter?: Reporter;
}

/** What {@link runPlaybooks} did. */
export interface ScheduleOutcome {
  /** Final results by unit; `undefined` for units not started (bail or interrupt). */
  results: (PlaybookResult | undefined)[];
  /** True when `--bail` stopped the run. */
  bailed: boolean;
}

function retryRecordFile(file: string | undefined, attempt: number): string | undefined {
  if (!file || attempt === 0) return file;
  return file.replace(/(\.jsonl)?$/, `.retry-${attempt}.jsonl`);
}

/**
 * Runs the units, `parallel` at a time, in order of the array. Never rejects
 * for a playbook failure.
 */
export async function runPlaybooks(
  units: readonly RunUnit[],
  options: RunPlaybooksOptions = {},
): Promise<ScheduleOutcome> {
  const reporter = options.reporter ?? { runEnd() {} };
  const retries = options.retries ?? 0;
  const results: (PlaybookResult | undefined)[] = new Array(units.length);
  let bailed = false;
  let next = 0;
  const stopped = () => bailed || options.signal?.aborted === true;

  const runUnit = async (i: number, worker: number): Promise<PlaybookResult> => {
    const unit = units[i];
    const base = { index: i, name: unit.playbook?.meta.name ?? unit.file, file: unit.file };
    if (!unit.playbook || unit.result) {
      const result = unit.result!;
      result.worker = worker;
      reporter.playbookStart?.(base);
      reporter.playbookEnd?.(base, result);
      return result;
    }
    const attempts: PlaybookResult[] = [];
    for (let attempt = 0;; attempt++) {
      const info: PlaybookInfo = {
        ...base,
        ...(attempt > 0 ? { retry: attempt } : {}),
        ...(unit.repeat !== undefined ? { repeat: unit.repeat } : {}),
      };
      let willRetry = false;
      const result = await runPlaybook(unit.playbook, {
        ...options,
        file: unit.file,
        index: i,
        recordFile: retryRecordFile(unit.recordFile, attempt),
        observer: {
          playbookStart: () => reporter.playbookStart?.(info),
          stepStart: (_p, s) => reporter.stepStart?.(info, s),
          stepEnd: (_p, s) => reporter.stepEnd?.(info, s),
          log: (_p, e) => reporter.log?.(info, e),
          playbookEnd: (_p, r) => {
            r.worker = worker;
            if (attempt > 0) r.retry = attempt;
            if (unit.repeat !== undefined) r.repeat = unit.repeat;
            willRetry = r.status === "failed" && attempt < retries && !stopped() &&
              r.kept.length === 0;
            if (!willRetry && attempts.length > 0) {
              r.attempts = [...attempts];
              if (r.status === "passed") r.status = "flaky";
            }
            if (willRetry) reporter.retrying?.(info, attempt);
            reporter.playbookEnd?.(info, r);
          },
        },
      });
      if (!willRetry) return result;
      attempts.push(result); // the next attempt launches a fresh VM (runPlaybook always does)
    }
  };

  const worker = async (id: number) => {
    while (!stopped()) {
      const i = next++;
      if (i >= units.length) return;
      const result = await runUnit(i, id);
      results[i] = result;
      if (options.bail && (result.status === "failed" || result.status === "interrupted")) {
        bailed = true;
      }
    }
  };
  const parallel = Math.max(1, Math.min(options.parallel ?? 1, units.length));
  await Promise.all(Array.from({ length: parallel }, (_, id) => worker(id)));
  return { results, bailed };
}
