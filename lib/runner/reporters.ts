/**
 * Reporters for playbook runs: `pretty` (live progress on stderr), and
 * `json`, `junit` and `tap` (one document on stdout at the end, so it can be
 * redirected).
 *
 * @module
 */
import { formatDuration } from "../duration.ts";
import {
  countResults,
  type Failure,
  jsonSafeResults,
  type LogEntry,
  type PlaybookInfo,
  type PlaybookResult,
  type RunObserver,
  type RunSummary,
  type StepResult,
  type TranscriptRecord,
} from "./results.ts";

/** A run reporter: live callbacks plus a final summary. */
export interface Reporter extends RunObserver {
  /** The run starts with these playbooks. */
  runStart?(playbooks: { name: string; file?: string }[]): void;
  /** The run ended. */
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
export type ReporterName = "pretty" | "json" | "junit" | "tap";

/** Options of {@link createReporter}. */
export interface ReporterOptions {
  /** Output sinks (default: `Deno.stdout` / `Deno.stderr`). */
  output?: ReporterOutput;
  /** Use ANSI colors (pretty only; default: stderr is a TTY and `NO_COLOR` is unset). */
  color?: boolean;
  /** Draw a live spinner line (pretty only; default: stderr is a TTY). */
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

function noColorEnv(): boolean {
  try {
    return (Deno.env.get("NO_COLOR") ?? "") !== "";
  } catch {
    return false;
  }
}

/** Creates a built-in reporter by name. */
export function createReporter(name: ReporterName, options: ReporterOptions = {}): Reporter {
  const output = options.output ?? defaultOutput();
  switch (name) {
    case "pretty": {
      const tty = Deno.stderr.isTerminal();
      return new PrettyReporter(output, {
        color: options.color ?? (tty && !noColorEnv()),
        live: options.live ?? tty,
        parallel: options.parallel ?? 1,
        verbose: options.verbose ?? false,
      });
    }
    case "json":
      return { runEnd: (s) => output.stdout(JSON.stringify(jsonReport(s), null, 2) + "\n") };
    case "junit":
      return { runEnd: (s) => output.stdout(junitReport(s)) };
    case "tap":
      return { runEnd: (s) => output.stdout(tapReport(s)) };
  }
}

// ------------------------------------------------------------------------------------ pretty

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

interface Running {
  info: PlaybookInfo;
  started: number;
  step: string[];
  stepStarted: number;
  headers: Set<string>;
  buffer: string[];
}

/** Formats one transcript record as a display line. */
export function formatTranscriptLine(rec: TranscriptRecord, max = 200): string {
  const time = rec.time.slice(11, 23);
  const arrow = rec.direction === "send" ? "→" : "←";
  let text = JSON.stringify(rec.message);
  if (text.length > max) text = text.slice(0, max - 1) + "…";
  return `${time} ${rec.vm} ${arrow} ${text}`;
}

/**
 * Human output on stderr: ✓/✗ per step with times, failures with diff, the
 * step path, recent QMP messages and console output, then a summary line.
 * On a TTY a spinner line shows the running step and its elapsed time.
 */
class PrettyReporter implements Reporter {
  readonly #out: ReporterOutput;
  readonly #color: boolean;
  readonly #live: boolean;
  readonly #grouped: boolean;
  readonly #verbose: boolean;
  readonly #running = new Map<number, Running>();
  #statusShown = false;
  #frame = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;

  constructor(
    out: ReporterOutput,
    opts: { color: boolean; live: boolean; parallel: number; verbose: boolean },
  ) {
    this.#out = out;
    this.#color = opts.color;
    this.#live = opts.live;
    this.#grouped = opts.parallel > 1;
    this.#verbose = opts.verbose;
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
    if (!this.#live || this.#running.size === 0) return;
    const now = performance.now();
    const parts = [...this.#running.values()].map((r) => {
      const where = r.step.length > 0 ? `${r.info.name} › ${r.step.join(" › ")}` : r.info.name;
      const since = r.step.length > 0 ? r.stepStarted : r.started;
      return `${where} ${formatDuration(now - since)}`;
    });
    let line = `${SPINNER[this.#frame % SPINNER.length]} ${parts.join("  |  ")}`;
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
    if (this.#live) this.#ticker = setInterval(this.#tick, 120);
    if (playbooks.length > 1) {
      this.#write([this.#dim(`running ${playbooks.length} playbooks`)]);
    }
  }

  playbookStart(info: PlaybookInfo): void {
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
      : result.status === "skipped"
      ? this.#yellow("–")
      : this.#red("✗");
    const status = result.status === "skipped"
      ? this.#dim(`skipped: ${result.skipReason}`)
      : `${result.status === "interrupted" ? "interrupted; " : ""}steps: ${stepText}`;
    lines.push(`${mark} ${this.#bold(result.name)}  ${status}  ${time}`, "");
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
    if (failedSteps.length > 0) {
      lines.push(this.#red("Failures:"));
      for (const f of failedSteps) lines.push(`  ${this.#red("✗")} ${f}`);
    }
    const parts = [
      p.passed ? this.#green(`${p.passed} passed`) : "0 passed",
      p.failed ? this.#red(`${p.failed} failed`) : "0 failed",
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

// -------------------------------------------------------------------------------------- json

/** The JSON document printed by the `json` reporter (kept VMs without their machine object). */
export function jsonReport(s: RunSummary): Record<string, unknown> {
  return {
    version: 1,
    ok: s.ok,
    interrupted: s.interrupted,
    ...(s.interruptedBy ? { interruptedBy: s.interruptedBy } : {}),
    durationMs: Math.round(s.durationMs),
    counts: s.counts,
    ...(s.shard ? { shard: s.shard } : {}),
    ...(s.shards ? { shards: s.shards } : {}),
    playbooks: jsonSafeResults(s.results),
  };
}

// ------------------------------------------------------------------------------------- junit

function xml(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "")
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3);
}

/** Plain-text details of a failure (message, step, diff, QMP messages, console). */
export function failureText(f: Failure): string {
  const lines = [`${f.name}: ${f.message}`, `at: ${f.step}`];
  if (f.diff) lines.push("", f.diff);
  for (const c of f.causes) lines.push(`caused by: ${c}`);
  if (f.transcript.length) {
    lines.push(
      "",
      "last QMP messages:",
      ...f.transcript.map((r) => "  " + formatTranscriptLine(r)),
    );
  }
  if (f.qemuExit) lines.push("", `QEMU ${f.qemuExit}`);
  if (f.consoleTail) {
    lines.push(
      "",
      "serial console (last lines):",
      ...f.consoleTail.split("\n").map((l) => "  " + l),
    );
  }
  return lines.join("\n");
}

/** The JUnit XML document printed by the `junit` reporter: one testsuite per playbook. */
export function junitReport(s: RunSummary): string {
  const suites: string[] = [];
  let tests = 0;
  let failures = 0;
  let errors = 0;
  let skipped = 0;
  for (const r of s.results) {
    const cases: string[] = [];
    let sf = 0;
    let se = 0;
    let ss = 0;
    const failureTag = (f: Failure) => {
      const tag = f.name === "ExpectationError" ? "failure" : "error";
      if (tag === "failure") sf++;
      else se++;
      return `<${tag} message="${xml(f.message.split("\n")[0])}" type="${xml(f.name)}">${
        xml(failureText(f))
      }</${tag}>`;
    };
    const walk = (steps: StepResult[]) => {
      for (const st of steps) {
        const name = xml(st.path.join(" › "));
        const attrs = `name="${name}" classname="${xml(r.name)}" time="${seconds(st.durationMs)}"`;
        let body = "";
        if (st.status === "skipped") {
          ss++;
          body = `<skipped message="${xml(st.skipReason ?? "skipped")}"/>`;
        } else if (st.status === "failed") {
          if (st.failure) body = failureTag(st.failure);
          else {
            sf++;
            body = `<failure message="a nested step failed" type="StepFailedError"/>`;
          }
        }
        cases.push(body ? `    <testcase ${attrs}>${body}</testcase>` : `    <testcase ${attrs}/>`);
        walk(st.steps);
      }
    };
    walk(r.steps);
    if (r.failure) {
      cases.push(
        `    <testcase name="(playbook)" classname="${xml(r.name)}" time="0">${
          failureTag(r.failure)
        }</testcase>`,
      );
    }
    for (const f of r.cleanupFailures) {
      cases.push(
        `    <testcase name="cleanup" classname="${xml(r.name)}" time="0">${
          failureTag(f)
        }</testcase>`,
      );
    }
    if (r.status === "skipped" && cases.length === 0) {
      ss++;
      cases.push(
        `    <testcase name="(playbook)" classname="${xml(r.name)}" time="0"><skipped message="${
          xml(r.skipReason ?? "skipped")
        }"/></testcase>`,
      );
    }
    const logs = r.logs.map((l) =>
      `${l.time} [${l.source}]${l.path.length ? ` ${l.path.join(" › ")}:` : ""} ${l.message}`
    );
    tests += cases.length;
    failures += sf;
    errors += se;
    skipped += ss;
    suites.push(
      `  <testsuite name="${xml(r.name)}"${
        r.file ? ` file="${xml(r.file)}"` : ""
      } tests="${cases.length}" ` +
        `failures="${sf}" errors="${se}" skipped="${ss}" time="${seconds(r.durationMs)}">\n` +
        cases.join("\n") + (cases.length ? "\n" : "") +
        (logs.length ? `    <system-out>${xml(logs.join("\n"))}</system-out>\n` : "") +
        `  </testsuite>`,
    );
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<testsuites name="qmpkit playbooks" tests="${tests}" failures="${failures}" errors="${errors}" ` +
    `skipped="${skipped}" time="${seconds(s.durationMs)}">\n` +
    suites.join("\n") + (suites.length ? "\n" : "") + `</testsuites>\n`;
}

// --------------------------------------------------------------------------------------- tap

function tapName(name: string): string {
  return name.replace(/\\/g, "\\\\").replace(/#/g, "\\#").replace(/\n/g, " ");
}

function yamlBlock(f: Failure, durationMs: number | undefined, indent: string): string[] {
  const lines = [`${indent}  ---`];
  const str = (k: string, v: string) => {
    if (v.includes("\n")) {
      lines.push(`${indent}  ${k}: |-`, ...v.split("\n").map((l) => `${indent}    ${l}`));
    } else lines.push(`${indent}  ${k}: ${JSON.stringify(v)}`);
  };
  str("message", f.message);
  str("name", f.name);
  str("step", f.step);
  if (durationMs !== undefined) lines.push(`${indent}  duration_ms: ${Math.round(durationMs)}`);
  if (f.expected !== undefined) str("expected", f.expected);
  if (f.actual !== undefined) str("actual", f.actual);
  if (f.diff) str("diff", f.diff);
  if (f.transcript.length) str("qmp", f.transcript.map((r) => formatTranscriptLine(r)).join("\n"));
  lines.push(`${indent}  ...`);
  return lines;
}

/** The TAP version 14 document printed by the `tap` reporter: a subtest per playbook. */
export function tapReport(s: RunSummary): string {
  const out = ["TAP version 14"];
  const steps = (list: StepResult[], indent: string) => {
    list.forEach((st, i) => {
      if (st.steps.length > 0) {
        out.push(`${indent}# Subtest: ${tapName(st.name)}`);
        steps(st.steps, indent + "    ");
        out.push(`${indent}    1..${st.steps.length}`);
      }
      const n = i + 1;
      if (st.status === "skipped") {
        out.push(`${indent}ok ${n} - ${tapName(st.name)} # SKIP ${tapName(st.skipReason ?? "")}`);
      } else if (st.status === "passed") out.push(`${indent}ok ${n} - ${tapName(st.name)}`);
      else {
        out.push(`${indent}not ok ${n} - ${tapName(st.name)}`);
        if (st.failure) out.push(...yamlBlock(st.failure, st.durationMs, indent));
      }
    });
  };
  s.results.forEach((r, i) => {
    const indent = "    ";
    out.push(`# Subtest: ${tapName(r.name)}`);
    steps(r.steps, indent);
    let count = r.steps.length;
    if (r.failure) {
      count++;
      out.push(`${indent}not ok ${count} - (playbook)`, ...yamlBlock(r.failure, undefined, indent));
    }
    for (const f of r.cleanupFailures) {
      count++;
      out.push(`${indent}not ok ${count} - cleanup`, ...yamlBlock(f, undefined, indent));
    }
    out.push(`${indent}1..${count}`);
    const n = i + 1;
    if (r.status === "skipped") {
      out.push(`ok ${n} - ${tapName(r.name)} # SKIP ${tapName(r.skipReason ?? "")}`);
    } else if (r.status === "passed") out.push(`ok ${n} - ${tapName(r.name)}`);
    else {out.push(
        `not ok ${n} - ${tapName(r.name)}${r.status === "interrupted" ? " # interrupted" : ""}`,
      );}
  });
  out.push(`1..${s.results.length}`);
  if (s.interrupted) out.push(`# interrupted by ${s.interruptedBy ?? "Ctrl-C"}`);
  return out.join("\n") + "\n";
}
