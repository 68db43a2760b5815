/**
 * Run progress: how many playbooks are done, running and failed, and for how
 * long the run has been going; drawn as a live status line on a TTY.
 *
 * @module
 */
import { formatDuration } from "../duration.ts";
import type { PlaybookInfo, PlaybookResult } from "./results.ts";
import type { Reporter, ReporterOutput } from "./reporters.ts";

/** Counts of a run in progress. */
export class Progress {
  /** Playbook runs in the run (repeats included; retries not). */
  total = 0;
  /** Finished (final attempts). */
  done = 0;
  /** Failed or interrupted so far. */
  failed = 0;
  /** Flaky so far. */
  flaky = 0;
  /** Running now. */
  running = 0;
  /** When the run started (`performance.now()`). */
  started = performance.now();

  /** The run starts with `total` playbook runs. */
  start(total: number): void {
    this.total = total;
    this.started = performance.now();
  }

  /** An attempt started. */
  playbookStart(): void {
    this.running++;
  }

  /** An attempt ended; `final` false when a retry follows. */
  playbookEnd(result: PlaybookResult, final = true): void {
    this.running = Math.max(0, this.running - 1);
    if (!final) return;
    this.done++;
    if (result.status === "failed" || result.status === "interrupted") this.failed++;
    if (result.status === "flaky") this.flaky++;
  }

  /** `3/10 done · 2 running · 1 failed · 12.3s`. */
  text(now = performance.now()): string {
    return [
      `${this.done}/${this.total} done`,
      `${this.running} running`,
      `${this.failed} failed`,
      ...(this.flaky ? [`${this.flaky} flaky`] : []),
      formatDuration(now - this.started),
    ].join(" · ");
  }
}

/**
 * A reporter that only draws the progress status line on stderr, redrawn in
 * place every 250 ms (for runs whose report goes to stdout or a file).
 */
export class ProgressReporter implements Reporter {
  readonly #out: ReporterOutput;
  readonly #progress = new Progress();
  readonly #retrying = new Set<number>();
  #ticker: ReturnType<typeof setInterval> | undefined;
  #shown = false;

  /** Draws on `out.stderr`. */
  constructor(out: ReporterOutput) {
    this.#out = out;
  }

  #draw = (): void => {
    this.#out.stderr(`\r\x1b[2K${this.#progress.text()}`);
    this.#shown = true;
  };

  runStart(playbooks: { name: string }[]): void {
    this.#progress.start(playbooks.length);
    this.#ticker = setInterval(this.#draw, 250);
    this.#draw();
  }

  retrying(p: { index: number }): void {
    this.#retrying.add(p.index);
  }

  playbookStart(_p: PlaybookInfo): void {
    this.#progress.playbookStart();
    this.#draw();
  }

  playbookEnd(p: PlaybookInfo, result: PlaybookResult): void {
    // A failed attempt that is retried is not final; `retrying` comes before this call.
    const final = !this.#retrying.delete(p.index);
    this.#progress.playbookEnd(result, final);
    this.#draw();
  }

  runEnd(): void {
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    if (this.#shown) this.#out.stderr("\r\x1b[2K");
  }
}
