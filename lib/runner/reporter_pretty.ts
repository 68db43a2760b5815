/**
 * The `pretty` reporter: human output on stderr, with a live status line on a TTY.
 *
 * @module
 */
import { formatDuration } from "../duration.ts";
import { Progress } from "./progress.ts";
import { formatTranscriptLine } from "./report_text.ts";
import {
  countResults,
  type Failure,
  type LogEntry,
  type PlaybookInfo,
  type PlaybookResult,
  type RunSummary,
  type StepResult,
} from "./results.ts";
import type { Reporter, ReporterOutput } from "./reporters.ts";

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

interface Running {
  info: PlaybookInfo;
  started: number;
  step: string[];
  stepStarted: number;
  headers: Set<string>;
  buffer: string[];
}

/**
 * Human output on stderr: ✓/✗ per step with times, failures with diff, the
 * step path, recent QMP messages and console output, then a summary line.
 * On a TTY a spinner line shows the running step and its elapsed time.
 */
export class PrettyReporter implements Reporter {
  readonly #out: ReporterOutput;
  readonly #color: boolean;
  readonly #live: boolean;
  readonly #grouped: boolean;
  readonly #verbose: boolean;
  readonly #progressLines: boolean;
  readonly #running = new Map<number, Running>();
  readonly #progress = new Progress();
  readonly #retrying = new Map<number, number>();
  #statusShown = false;
  #frame = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;

  constructor(
    out: ReporterOutput,
    opts: {
      color: boolean;
      live: boolean;
      parallel: number;
      verbose: boolean;
      progressLines: boolean;
    },
  ) {
    this.#out = out;
    this.#color = opts.color;
    this.#live = opts.live;
    this.#grouped = opts.parallel > 1;
    this.#verbose = opts.verbose;
    this.#progressLines = opts.progressLines;
  }

  #c(code: number, text: string): string {
    return this.#color ? `\x1b[${code}m${text}\x1b[0m` : text;
  }
  #red = (t: string) => this.#c(31, t);
  #green = (t: string) => this.#c(32, t);
  #yellow = (t: string) => this.#c(33, t);
  #dim = (t: string) => this.#c(2, t);
  #bold = (t: string) => this.#c(1, t);

  #write(lines: string[]): void {
    if (lines.length === 0) return;
    this.#clearStatus();
    this.#out.stderr(lines.join("\n") + "\n");
    this.#drawStatus();
  }

  #emit(r: Running, lines: string[]): void {
    if (this.#grouped) r.buffer.push(...lines);
    else this.#write(lines);
  }

  #clearStatus(): void {
    if (this.#statusShown) {
      this.#out.stderr("\r\x1b[2K");
      this.#statusShown = false;
    }
  }

  #drawStatus(): void {
    if (!this.#live || this.#progress.total === 0) return;
    const now = performance.now();
    const parts = [...this.#running.values()].map((r) => {
      const where = r.step.length > 0 ? `${r.info.name} › ${r.step.join(" › ")}` : r.info.name;
      const since = r.step.length > 0 ? r.stepStarted : r.started;
      return `${where} ${formatDuration(now - since)}`;
    });
    let line = `${SPINNER[this.#frame % SPINNER.length]} ${this.#progress.text(now)}${
      parts.length ? `  |  ${parts.join("  |  ")}` : ""
    }`;
    const cols = consoleColumns();
    if (line.length > cols - 1) line = line.slice(0, cols - 2) + "…";
    this.#out.stderr(this.#dim(line));
    this.#statusShown = true;
  }

  #tick = (): void => {
    this.#frame++;
    this.#clearStatus();
    this.#drawStatus();
  };

  runStart(playbooks: { name: string; file?: string }[]): void {
    this.#progress.start(playbooks.length);
    if (this.#live) this.#ticker = setInterval(this.#tick, 120);
    if (playbooks.length > 1) {
      this.#write([this.#dim(`running ${playbooks.length} playbooks`)]);
    }
  }

  retrying(info: { index: number; name: string }, attempt: number): void {
    this.#retrying.set(info.index, attempt + 1);
  }

  playbookStart(info: PlaybookInfo): void {
    this.#progress.playbookStart();
    const now = performance.now();
    const r: Running = {
      info,
      started: now,
      step: [],
      stepStarted: now,
      headers: new Set(),
      buffer: [],
    };
    this.#running.set(info.index, r);
    const head = `${this.#bold("▶ " + info.name)}${info.file ? "  " + this.#dim(info.file) : ""}`;
    if (this.#grouped) r.buffer.push(head);
    else this.#write([head]);
  }

  stepStart(info: PlaybookInfo, step: { name: string; path: string[] }): void {
    const r = this.#running.get(info.index);
    if (!r) return;
    for (let i = 1; i < step.path.length; i++) {
      const key = step.path.slice(0, i).join("\u0000");
      if (!r.headers.has(key)) {
        r.headers.add(key);
        this.#emit(r, [`${"  ".repeat(i)}${this.#dim("▸")} ${step.path[i - 1]}`]);
      }
    }
    r.step = step.path;
    r.stepStarted = performance.now();
  }

  stepEnd(info: PlaybookInfo, step: StepResult): void {
    const r = this.#running.get(info.index);
    if (!r) return;
    const pad = "  ".repeat(step.path.length);
    const time = this.#dim(formatDuration(step.durationMs));
    const lines: string[] = [];
    if (step.status === "passed") lines.push(`${pad}${this.#green("✓")} ${step.name}  ${time}`);
    else if (step.status === "skipped") {
      lines.push(`${pad}${this.#yellow("–")} ${step.name}  ${this.#dim(`(${step.skipReason})`)}`);
    } else {
      const why = step.nestedFailure ? this.#dim("  (a nested step failed)") : "";
      lines.push(`${pad}${this.#red("✗")} ${step.name}  ${time}${why}`);
      if (step.failure) lines.push(...this.#failure(step.failure, pad + "    "));
    }
    this.#emit(r, lines);
    r.step = step.path.slice(0, -1);
    r.stepStarted = performance.now();
  }

  log(info: PlaybookInfo, entry: LogEntry): void {
    const r = this.#running.get(info.index);
    if (!r || entry.source === "vm") return; // VM lifecycle lines are kept for json/junit
    const pad = "  ".repeat(entry.path.length + 1);
    this.#emit(r, entry.message.split("\n").map((l) => `${pad}${this.#dim("· " + l)}`));
  }

  playbookEnd(info: PlaybookInfo, result: PlaybookResult): void {
    const r = this.#running.get(info.index);
    this.#running.delete(info.index);
    const retry = this.#retrying.get(info.index);
    this.#retrying.delete(info.index);
    this.#progress.playbookEnd(result, retry === undefined);
    const lines = r?.buffer ?? [];
    if (result.failure) {
      lines.push(`  ${this.#red("✗")} ${this.#dim("(playbook)")}`);
      lines.push(...this.#failure(result.failure, "      "));
    }
    for (const f of result.cleanupFailures) {
      lines.push(`  ${this.#red("✗")} ${this.#dim("cleanup")}`);
      lines.push(...this.#failure(f, "      "));
    }
    const c = countResults([result]).steps;
    const stepText = `${c.passed} passed, ${c.failed} failed` +
      (c.skipped ? `, ${c.skipped} skipped` : "");
    const time = this.#dim(formatDuration(result.durationMs));
    const mark = result.status === "passed"
      ? this.#green("✓")
      : result.status === "flaky"
      ? this.#yellow("⚠")
      : result.status === "skipped"
      ? this.#yellow("–")
      : this.#red("✗");
    const status = result.status === "skipped"
      ? this.#dim(`skipped: ${result.skipReason}`)
      : `${result.status === "interrupted" ? "interrupted; " : ""}${
        result.status === "flaky" ? this.#yellow(`flaky (passed on retry ${result.retry}); `) : ""
      }steps: ${stepText}`;
    const label = `${result.name}${
      result.repeat !== undefined ? ` (repeat ${result.repeat + 1})` : ""
    }${result.retry && result.status !== "flaky" ? ` (retry ${result.retry})` : ""}`;
    lines.push(`${mark} ${this.#bold(label)}  ${status}  ${time}`);
    if (retry !== undefined) {
      lines.push(this.#yellow(`↻ retrying ${result.name} on a fresh VM (retry ${retry})`));
    }
    if (!this.#live && this.#progressLines && this.#progress.total > 1) {
      lines.push(this.#dim(`[${this.#progress.text()}]`));
    }
    lines.push("");
    this.#write(lines);
  }

  #failure(f: Failure, pad: string): string[] {
    const out: string[] = [];
    const msg = f.message.split("\n");
    out.push(`${this.#red(`${f.name}: ${msg[0]}`)}`, ...msg.slice(1));
    if (f.step !== "(playbook)") out.push(`${this.#dim("at:")} ${f.step}`);
    if (f.diff) {
      for (const line of f.diff.split("\n")) {
        out.push(
          line.startsWith("- ") || line === "- Expected"
            ? this.#red(line)
            : line.startsWith("+ ")
            ? this.#green(line)
            : line,
        );
      }
    }
    const causes = this.#verbose ? f.causes : newCauses(f.message, f.causes);
    for (const c of causes) {
      const [first, ...more] = c.split("\n");
      out.push(`${this.#dim("caused by:")} ${first}`, ...more.map((l) => `  ${l}`));
    }
    if (f.transcript.length > 0) {
      out.push(this.#dim(`last QMP messages (${f.transcript.length}):`));
      for (const rec of f.transcript) out.push(`  ${this.#dim(formatTranscriptLine(rec, 160))}`);
    }
    if (f.qemuExit) out.push(`QEMU ${f.qemuExit.replace(/\n/g, "\n  ")}`);
    if (f.consoleTail) {
      out.push(this.#dim("serial console (last lines):"));
      for (const l of f.consoleTail.split("\n")) out.push(`  ${this.#dim("| " + l)}`);
    }
    if (this.#verbose) {
      for (const l of stackFrames(f.stack)) out.push(this.#dim(l));
    } else if (
      !["ExpectationError", "StepTimeoutError", "PlaybookTimeoutError"].includes(f.name)
    ) {
      for (const l of stackFrames(f.stack).filter(isUserFrame).slice(0, 3)) {
        out.push(this.#dim(l));
      }
    }
    return out.map((l) => pad + l);
  }

  runEnd(s: RunSummary): void {
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    this.#clearStatus();
    const { playbooks: p, steps } = s.counts;
    const failedSteps: string[] = [];
    for (const r of s.results) {
      if (r.failure) failedSteps.push(`${r.name} › (playbook)`);
      const walk = (list: StepResult[]) => {
        for (const st of list) {
          if (st.status === "failed" && st.failure) {
            failedSteps.push(`${r.name} › ${st.path.join(" › ")}`);
          }
          walk(st.steps);
        }
      };
      walk(r.steps);
      if (r.cleanupFailures.length) failedSteps.push(`${r.name} › cleanup`);
    }
    const lines: string[] = [];
    const flaky = s.results.filter((r) => r.status === "flaky");
    if (flaky.length > 0) {
      lines.push(this.#yellow("Flaky (failed, then passed on a retry):"));
      for (const r of flaky) {
        const first = r.attempts?.[0];
        const why = first ? firstFailure(first) : undefined;
        lines.push(
          `  ${this.#yellow("⚠")} ${r.name}${why ? this.#dim(`  first failure: ${why}`) : ""}`,
        );
      }
    }
    if (failedSteps.length > 0) {
      lines.push(this.#red("Failures:"));
      for (const f of failedSteps) lines.push(`  ${this.#red("✗")} ${f}`);
    }
    const parts = [
      p.passed ? this.#green(`${p.passed} passed`) : "0 passed",
      p.failed ? this.#red(`${p.failed} failed`) : "0 failed",
      ...(p.flaky ? [this.#yellow(`${p.flaky} flaky`)] : []),
      ...(p.skipped ? [this.#yellow(`${p.skipped} skipped`)] : []),
      ...(p.interrupted ? [this.#red(`${p.interrupted} interrupted`)] : []),
    ];
    lines.push(
      `${s.ok ? this.#green("ok") : this.#red("FAILED")} | ${parts.join(", ")} playbooks | ` +
        `${steps.passed} passed, ${steps.failed} failed, ${steps.skipped} skipped steps | ` +
        `${formatDuration(s.durationMs)}${
          s.interrupted ? this.#red(`  (interrupted by ${s.interruptedBy ?? "Ctrl-C"})`) : ""
        }`,
    );
    this.#out.stderr(lines.join("\n") + "\n");
  }
}

/** `step path: message` of a result's first failure. */
function firstFailure(r: PlaybookResult): string | undefined {
  const find = (list: StepResult[]): string | undefined => {
    for (const st of list) {
      if (st.failure) return `${st.failure.step}: ${st.failure.message.split("\n")[0]}`;
      const inner = find(st.steps);
      if (inner) return inner;
    }
    return undefined;
  };
  const f = r.failure ?? r.cleanupFailures[0];
  return find(r.steps) ?? (f ? `${f.step}: ${f.message.split("\n")[0]}` : undefined);
}

/** qmpkit's own source root (`.../lib/` and `.../scripts/` below it are not user code). */
const QMPKIT_ROOT = new URL("../../", import.meta.url).href;

/** The `at ...` lines of a stack, trimmed. */
function stackFrames(stack: string | undefined): string[] {
  return (stack ?? "").split("\n").filter((l) => /^\s+at /.test(l)).map((l) => l.trim());
}

/** True for a frame in the playbook's own code: not in qmpkit, Deno or Node internals. */
function isUserFrame(frame: string): boolean {
  if (!/\b(file|https?):\/\//.test(frame)) return false; // Promise.all, ext:, node:, native
  return !frame.includes(`${QMPKIT_ROOT}lib/`) && !frame.includes(`${QMPKIT_ROOT}scripts/`);
}

/**
 * The first line of each cause that the message does not already say
 * (`NotFound: No such file or directory (os error 2)` under a message that
 * says "No such file or directory" adds nothing).
 */
function newCauses(message: string, causes: readonly string[]): string[] {
  const out: string[] = [];
  for (const c of causes) {
    const first = c.split("\n")[0];
    // Without the error names ("TypeError: SyntaxError: ...") and errno suffix.
    const core = first.replace(/^([A-Z][\w.]*: )+/, "").replace(/ \(os error \d+\)$/, "").trim();
    if (core !== "" && message.includes(core)) continue;
    if (!out.includes(first)) out.push(first);
  }
  return out;
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns || 100;
  } catch {
    return 100;
  }
}
