/**
 * The playbook engine: launches (or attaches to) the VM, runs the body with
 * nested, timed steps, keeps a ring of recent QMP messages for failure
 * reports, records transcripts, runs cleanups and stops every VM it started.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { join } from "node:path";
import { connect, type QmpClient, type TranscriptEntry, type TypedEvent } from "../client.ts";
import type { EventName } from "../qapi/types.ts";
import { type Duration, formatDuration, parseDuration } from "../duration.ts";
import { AbortError, ConnectionClosedError, QmpCommandError } from "../errors.ts";
import { launch, type Machine } from "../machine.ts";
import { type LibvirtDomain, startLibvirtDomain } from "../libvirt_domain.ts";
import type { AgentClient } from "../agent/client.ts";
import {
  ExpectationError,
  InterruptedError,
  PlaybookTimeoutError,
  PlaybookUsageError,
  StepFailedError,
  StepTimeoutError,
} from "./errors.ts";
import { expect, type Expectation, matchObject } from "./expect.ts";
import { formatShort, formatValue } from "./format.ts";
import type {
  EventuallyOptions,
  ExpectedCommandError,
  ExpectedErrorType,
  ExpectEventOptions,
  Playbook,
  PlaybookContext,
  PlaybookLaunchOptions,
  StepOptions,
} from "./playbook.ts";

/** One QMP message of a playbook, as kept in failure reports and `--record` files. */
export interface TranscriptRecord {
  /** When it was sent or received (ISO 8601). */
  time: string;
  /** Which VM's connection: `vm` for the playbook's own, `vm2`... for `t.launch()` ones. */
  vm: string;
  /** `send` (runner → QEMU) or `recv` (QEMU → runner). */
  direction: "send" | "recv";
  /** The message. */
  message: Record<string, unknown>;
}

/** A failure, flattened for reports (JSON-safe). */
export interface Failure {
  /** The error class name, e.g. `ExpectationError`, `StepTimeoutError`. */
  name: string;
  /** The error message. */
  message: string;
  /** The step path (`block › backup › job concludes`), `(playbook)` or `cleanup`. */
  step: string;
  /** The failing matcher, for assertion failures. */
  matcher?: string;
  /** The expected value, formatted, for assertion failures. */
  expected?: string;
  /** The actual value, formatted, for assertion failures. */
  actual?: string;
  /** A line diff of expected (`-`) against actual (`+`), when available. */
  diff?: string;
  /** The stack trace, when the error has one. */
  stack?: string;
  /** Messages of the error's `cause` chain. */
  causes: string[];
  /** The last QMP messages exchanged before the failure (oldest first). */
  transcript: TranscriptRecord[];
  /** The last lines of the launched VM's serial console, when it has one. */
  consoleTail?: string;
  /** How QEMU ended (`killed by SIGKILL; stderr: ...`), when it died during the playbook. */
  qemuExit?: string;
}

/** The outcome of one step. */
export interface StepResult {
  /** The step's name. */
  name: string;
  /** Its path, outermost first. */
  path: string[];
  /** `passed`, `failed` or `skipped`. */
  status: "passed" | "failed" | "skipped";
  /** Why it was skipped. */
  skipReason?: string;
  /** How long it ran, in ms. */
  durationMs: number;
  /** The step's own failure; absent when only a nested step failed. */
  failure?: Failure;
  /** True when the step failed because a nested step failed. */
  nestedFailure?: boolean;
  /** Nested steps, in start order. */
  steps: StepResult[];
}

/** A line logged by the playbook (`t.log`), a VM lifecycle message or the runner. */
export interface LogEntry {
  /** When (ISO 8601). */
  time: string;
  /** Step path at the time (empty outside steps). */
  path: string[];
  /** Who logged it. */
  source: "playbook" | "vm" | "runner";
  /** The text. */
  message: string;
}

/** A VM left running by `--keep-vm` after a failure. */
export interface KeptVm {
  /** Its label (`vm`, `vm2`, ...). */
  label: string;
  /** QEMU's pid. */
  pid: number;
  /** The QMP socket path (nothing is connected to it any more). */
  socketPath: string;
  /** The guest agent's socket path, when the VM has one (nothing is connected to it either). */
  agentSocketPath?: string;
  /** The machine, so the runner can stop it later. */
  machine: Machine;
}

/** The outcome of one playbook. */
export interface PlaybookResult {
  /** The playbook's name. */
  name: string;
  /** The file it came from, when known. */
  file?: string;
  /** `passed`, `failed`, `skipped` (filtered out) or `interrupted` (Ctrl-C). */
  status: "passed" | "failed" | "skipped" | "interrupted";
  /** Why it was skipped. */
  skipReason?: string;
  /** How long it ran, in ms (VM launch and shutdown included). */
  durationMs: number;
  /** Top-level steps, in start order. */
  steps: StepResult[];
  /** A failure outside any step: loading, launching, or the body itself. */
  failure?: Failure;
  /** Cleanups that failed. */
  cleanupFailures: Failure[];
  /** Everything logged, in order. */
  logs: LogEntry[];
  /** VMs left running by `--keep-vm`. */
  kept: KeptVm[];
  /** The `--record` file, when recording. */
  recording?: string;
}

/** Identifies a playbook in observer callbacks. */
export interface PlaybookInfo {
  /** Position in the run (0-based). */
  index: number;
  /** The playbook's name. */
  name: string;
  /** The file it came from, when known. */
  file?: string;
}

/** Live notifications of a run, for reporters. All optional. */
export interface RunObserver {
  /** A playbook starts. */
  playbookStart?(playbook: PlaybookInfo): void;
  /** A step starts. */
  stepStart?(playbook: PlaybookInfo, step: { name: string; path: string[] }): void;
  /** A step ended (passed, failed or skipped). */
  stepEnd?(playbook: PlaybookInfo, step: StepResult): void;
  /** Something was logged. */
  log?(playbook: PlaybookInfo, entry: LogEntry): void;
  /** A playbook ended. */
  playbookEnd?(playbook: PlaybookInfo, result: PlaybookResult): void;
}

/** A compiled `--filter`: a substring, or `/regex/flags`. */
export interface StepFilter {
  /** The filter as given. */
  readonly source: string;
  /** True when a playbook name or a step path (`a › b`) matches. */
  matches(text: string): boolean;
  /** True when a nested step of the step at this path could match (substring paths only). */
  mayContain(path: string): boolean;
}

/**
 * Compiles a `--filter` value: `/regex/flags` is a regular expression, any
 * other text a case-sensitive substring. Both are tested against playbook
 * names and step paths (`block › backup › job concludes`).
 */
export function parseFilter(source: string): StepFilter {
  const m = /^\/(.+)\/([dgimsuvy]*)$/s.exec(source);
  if (m) {
    const re = new RegExp(m[1], m[2].replace(/[gy]/g, ""));
    return { source, matches: (text) => re.test(text), mayContain: () => false };
  }
  return {
    source,
    matches: (text) => text.includes(source),
    mayContain: (path) => source.startsWith(`${path} › `),
  };
}

/** Options of {@link runPlaybook}. */
export interface RunPlaybookOptions {
  /** The file the playbook came from (for reports). */
  file?: string;
  /** Position in the run (for observers). */
  index?: number;
  /** Attach to this QMP address instead of launching `meta.vm`. */
  qmp?: string;
  /** With `qmp`: keep retrying while the socket does not exist yet (within the 10 s deadline). */
  retry?: boolean;
  /** Playbook timeout; overrides `meta.timeout` (default `"5m"`). */
  timeout?: Duration;
  /** Default step timeout; overrides `meta.stepTimeout`. */
  stepTimeout?: Duration;
  /** Only run steps matching this filter (see {@link parseFilter}). */
  filter?: StepFilter;
  /** Interrupts the run (Ctrl-C): aborts `t.signal`, then cleanups run and VMs stop. */
  signal?: AbortSignal;
  /** On failure, leave launched VMs running (QMP disconnected) and skip cleanups. */
  keepVm?: boolean;
  /** Write every QMP message to this JSONL file. */
  recordFile?: string;
  /** How many recent QMP messages failure reports show (default 10). */
  ringSize?: number;
  /** Receives live progress. */
  observer?: RunObserver;
}

const liveMachines = new Set<Machine>();
const liveDomains = new Set<LibvirtDomain>();
const liveTempDirs = new Set<string>();

/**
 * Kills (SIGKILL) every VM the engine launched that is still running, destroys
 * the libvirt domains it started, and removes the playbook temp dirs still
 * there (kept with a `--keep-vm` VM, or left by a run stopped at once).
 */
export async function killAllMachines(): Promise<void> {
  await Promise.all([
    ...[...liveMachines].map((m) => m.kill().catch(() => undefined)),
    ...[...liveDomains].map((d) => d.destroy().catch(() => undefined)),
  ]);
  liveMachines.clear();
  liveDomains.clear();
  await Promise.all(
    [...liveTempDirs].map((d) => Deno.remove(d, { recursive: true }).catch(() => undefined)),
  );
  liveTempDirs.clear();
}

interface Frame {
  path: string[];
  signal: AbortSignal;
  children: StepResult[];
  matched: boolean;
}

const encoder = new TextEncoder();

/**
 * Runs one playbook and resolves with its result; never rejects for a
 * playbook failure. Launches `meta.vm` (or attaches to `options.qmp`), runs
 * the body, then the cleanups, then stops the VMs it launched.
 */
export async function runPlaybook(
  pb: Playbook,
  options: RunPlaybookOptions = {},
): Promise<PlaybookResult> {
  const name = pb.meta.name;
  const info: PlaybookInfo = { index: options.index ?? 0, name, file: options.file };
  const observer = options.observer ?? {};
  const result: PlaybookResult = {
    name,
    ...(options.file ? { file: options.file } : {}),
    status: "passed",
    durationMs: 0,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const t0 = performance.now();
  observer.playbookStart?.(info);

  const ringSize = options.ringSize ?? 10;
  const ring: TranscriptRecord[] = [];
  let record: Deno.FsFile | undefined;
  if (options.recordFile) {
    record = await Deno.open(options.recordFile, { write: true, create: true, truncate: true });
    result.recording = options.recordFile;
  }
  const transcript = (vm: string) => (entry: TranscriptEntry) => {
    const rec: TranscriptRecord = {
      time: entry.time.toISOString(),
      vm,
      direction: entry.direction,
      message: entry.message,
    };
    ring.push(rec);
    if (ring.length > ringSize) ring.shift();
    if (record) {
      try {
        record.writeSync(encoder.encode(JSON.stringify(rec) + "\n"));
      } catch { /* best effort */ }
    }
  };
  const log = (source: LogEntry["source"], path: string[], message: string) => {
    const entry: LogEntry = { time: new Date().toISOString(), path, source, message };
    result.logs.push(entry);
    observer.log?.(info, entry);
  };

  const ctl = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, ctl.signal]) : ctl.signal;
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(options.timeout ?? pb.meta.timeout ?? "5m");
  } catch (e) {
    timeoutMs = 300_000;
    result.failure = describeFailure(e, "(playbook)", [], undefined);
  }
  const timer = setTimeout(() => ctl.abort(new PlaybookTimeoutError(name, timeoutMs)), timeoutMs);

  const tempDir = await Deno.makeTempDir({ prefix: "qmpkit-play-" });
  liveTempDirs.add(tempDir);
  const machines: { label: string; machine: Machine }[] = [];
  let domain: LibvirtDomain | undefined;
  let client: QmpClient | undefined;
  let ctx: Context | undefined;
  const playbookMatched = !options.filter ||
    options.filter.matches(name) ||
    (options.file !== undefined && options.filter.matches(options.file));

  if (!result.failure) {
    try {
      if (options.qmp) {
        client = await connect(options.qmp, {
          timeout: "10s",
          retry: options.retry === true,
          signal,
          transcript: transcript("vm"),
        });
        log("runner", [], `attached to ${client.address}`);
      } else if (pb.meta.vm && "libvirt" in pb.meta.vm) {
        domain = await startLibvirtDomain({
          ...pb.meta.vm.libvirt,
          signal,
          qmp: { transcript: transcript("vm") },
        });
        liveDomains.add(domain);
        client = domain.qmp;
        log("vm", [], `started libvirt domain ${domain.name} (${domain.address})`);
      } else if (pb.meta.vm) {
        const machine = await launch({
          ...pb.meta.vm,
          signal,
          log: (m) => log("vm", [], m),
          qmp: { transcript: transcript("vm") },
        });
        liveMachines.add(machine);
        machines.push({ label: "vm", machine });
        client = machine.qmp;
      } else {
        throw new PlaybookUsageError(
          `Playbook "${name}" has no vm in its meta, so it can only run against an existing VM: ` +
            `pass --qmp ADDRESS, or add e.g. vm: { machine: "pc", paused: true }`,
        );
      }
      ctx = new Context({
        name,
        file: options.file,
        qmp: client,
        machine: machines[0]?.machine,
        domain,
        attachedTo: options.qmp ? client.address : undefined,
        tempDir,
        root: { path: [], signal, children: result.steps, matched: playbookMatched },
        filter: options.filter,
        stepTimeout: options.stepTimeout ?? pb.meta.stepTimeout,
        observer,
        info,
        log,
        ring,
        transcript,
        machines,
      });
      await ctx.runBody(pb.fn);
    } catch (e) {
      if (!(e instanceof StepFailedError)) {
        result.failure = describeFailure(e, "(playbook)", ring, consoleTail(machines[0]?.machine));
        const exit = await qemuExit(e, machines[0]?.machine);
        if (exit) result.failure.qemuExit = exit;
      }
    }
  }
  clearTimeout(timer);
  if (ctx) ctx.finished = true;

  const interrupted = options.signal?.aborted === true;
  const failedSoFar = result.failure !== undefined || result.steps.some(failedStep);
  const keep = options.keepVm === true && failedSoFar && !interrupted &&
    machines.some((m) => m.machine.running);
  if (ctx) {
    if (keep) {
      if (ctx.cleanupCount > 0) {
        log(
          "runner",
          [],
          `--keep-vm: ${ctx.cleanupCount} cleanup(s) not run, VM left as it failed`,
        );
      }
    } else {
      result.cleanupFailures = await ctx.runCleanups(interrupted ? 10_000 : 30_000, interrupted);
    }
  }

  if (keep) {
    for (const { label, machine } of machines) {
      if (!machine.running) continue;
      await machine.qmp.close();
      const agentSocketPath = machine.agentSocketPath;
      if (agentSocketPath) await machine.agent.close(); // free the socket for `qmp agent`
      result.kept.push({
        label,
        pid: machine.pid,
        socketPath: machine.socketPath,
        ...(agentSocketPath ? { agentSocketPath } : {}),
        machine,
      });
    }
  } else {
    for (const { machine } of [...machines].reverse()) {
      try {
        await machine.shutdown({ powerdown: false, quitTimeout: "5s", termTimeout: "3s" });
      } catch (e) {
        log("runner", [], `stopping ${machine.name} failed: ${errorText(e)}`);
        await machine.kill().catch(() => undefined);
      }
      liveMachines.delete(machine);
    }
    await Deno.remove(tempDir, { recursive: true }).catch(() => undefined);
    liveTempDirs.delete(tempDir);
  }
  if (domain) {
    // Started with autodestroy: it cannot outlive this process, so --keep-vm does not keep it.
    try {
      await domain.destroy();
      log("runner", [], `destroyed libvirt domain ${domain.name}`);
    } catch (e) {
      log("runner", [], `destroying libvirt domain ${domain.name} failed: ${errorText(e)}`);
    }
    liveDomains.delete(domain);
  }
  if (options.qmp && client) await client.close();
  record?.close();

  result.durationMs = performance.now() - t0;
  if (interrupted) result.status = "interrupted";
  else if (
    result.failure || result.cleanupFailures.length > 0 || result.steps.some(failedStep)
  ) {
    result.status = "failed";
  } else if (
    options.filter && !playbookMatched && result.steps.length > 0 &&
    result.steps.every((s) => s.status === "skipped")
  ) {
    result.status = "skipped";
    result.skipReason = `no step matches --filter ${options.filter.source}`;
  }
  observer.playbookEnd?.(info, result);
  return result;
}

function failedStep(s: StepResult): boolean {
  return s.status === "failed";
}

/**
 * When the connection to QEMU was lost, waits briefly for QEMU's exit status
 * (it lags the socket's close by a few ms) and describes it.
 */
async function qemuExit(error: unknown, machine: Machine | undefined): Promise<string | undefined> {
  if (!machine) return undefined;
  let lost = false;
  for (let e: unknown = error, i = 0; e instanceof Error && i < 8; e = e.cause, i++) {
    if (e instanceof ConnectionClosedError) lost = true;
  }
  if (!lost && machine.running) return undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    machine.exited,
    new Promise((r) => (timer = setTimeout(r, 1000))),
  ]);
  clearTimeout(timer);
  return machine.describeExit();
}

function consoleTail(machine: Machine | undefined, lines = 15): string | undefined {
  if (!machine) return undefined;
  const text = machine.console.tail(4000).replace(/\r/g, "");
  if (!text.trim()) return undefined;
  return text.split("\n").slice(-lines).join("\n");
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Removes ANSI escape sequences (Deno colours some of its own error messages). */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "");
}

/** Flattens an error into a JSON-safe {@link Failure}. */
export function describeFailure(
  error: unknown,
  step: string,
  ring: readonly TranscriptRecord[],
  consoleText: string | undefined,
): Failure {
  const err = error instanceof Error ? error : new Error(String(error));
  const causes: string[] = [];
  let c: unknown = err.cause;
  for (let i = 0; c !== undefined && i < 5; i++) {
    causes.push(stripAnsi(errorText(c)));
    c = c instanceof Error ? c.cause : undefined;
  }
  const failure: Failure = {
    name: err.name,
    message: stripAnsi(err.message),
    step,
    causes,
    transcript: [...ring],
  };
  if (err.stack) failure.stack = stripAnsi(err.stack);
  if (err instanceof ExpectationError) {
    failure.matcher = err.matcher;
    if (err.expected !== undefined) failure.expected = formatValue(err.expected);
    if (err.actual !== undefined) failure.actual = formatValue(err.actual);
    if (err.diff) failure.diff = err.diff;
  }
  if (consoleText) failure.consoleTail = consoleText;
  return failure;
}

/** Resolves like `p`, or rejects with `signal.reason` as soon as it is aborted. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  p.catch(() => {}); // it may still reject after we stopped waiting for it
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      resolve(v);
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function matchText(text: string, pattern: string | RegExp): boolean {
  return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
}

interface ContextInit {
  name: string;
  file: string | undefined;
  qmp: QmpClient;
  machine: Machine | undefined;
  domain?: LibvirtDomain;
  attachedTo: string | undefined;
  tempDir: string;
  root: Frame;
  filter: StepFilter | undefined;
  stepTimeout: Duration | undefined;
  observer: RunObserver;
  info: PlaybookInfo;
  log: (source: LogEntry["source"], path: string[], message: string) => void;
  ring: TranscriptRecord[];
  transcript: (vm: string) => (entry: TranscriptEntry) => void;
  machines: { label: string; machine: Machine }[];
}

class Context implements PlaybookContext {
  readonly name: string;
  readonly file: string | undefined;
  readonly tempDir: string;
  finished = false;
  readonly #init: ContextInit;
  readonly #als = new AsyncLocalStorage<Frame>();
  readonly #cleanups: (() => unknown)[] = [];
  readonly #stepTimeoutMs: number | undefined;

  constructor(init: ContextInit) {
    this.#init = init;
    this.name = init.name;
    this.file = init.file;
    this.tempDir = init.tempDir;
    this.#stepTimeoutMs = init.stepTimeout === undefined
      ? undefined
      : parseDuration(init.stepTimeout);
  }

  get qmp(): QmpClient {
    return this.#init.qmp;
  }

  get vm(): Machine {
    const m = this.#init.machine;
    if (!m && this.#init.domain) {
      throw new PlaybookUsageError(
        `t.vm is not available: playbook "${this.name}" runs libvirt domain ` +
          `${this.#init.domain.name}, not a QEMU it launched; use t.qmp and t.agent`,
      );
    }
    if (!m) {
      throw new PlaybookUsageError(
        `t.vm is not available: playbook "${this.name}" is attached to an existing VM ` +
          `(--qmp ${this.#init.attachedTo}); use t.qmp, and check t.attached before using t.vm`,
      );
    }
    return m;
  }

  get agent(): AgentClient {
    if (this.#init.domain) return this.#init.domain.agent;
    const m = this.#init.machine;
    if (!m) {
      throw new PlaybookUsageError(
        `t.agent is not available: playbook "${this.name}" is attached to an existing VM ` +
          `(--qmp ${this.#init.attachedTo}); connect to its agent socket with connectAgent()`,
      );
    }
    if (m.agentSocketPath === undefined) {
      throw new PlaybookUsageError(
        `t.agent is not available: playbook "${this.name}" launches its VM without an agent; ` +
          `add agent: true to its vm, e.g. vm: { guest: "tiny", agent: true }`,
      );
    }
    return m.agent;
  }

  get attached(): boolean {
    return this.#init.attachedTo !== undefined;
  }

  get signal(): AbortSignal {
    return this.#frame().signal;
  }

  get stepPath(): readonly string[] {
    return this.#frame().path;
  }

  get cleanupCount(): number {
    return this.#cleanups.length;
  }

  #frame(): Frame {
    return this.#als.getStore() ?? this.#init.root;
  }

  async runBody(fn: (t: PlaybookContext) => unknown): Promise<unknown> {
    const root = this.#init.root;
    const body = this.#als.run(root, async () => await fn(this));
    try {
      return await raceAbort(body, root.signal);
    } catch (e) {
      if (!root.signal.aborted || e !== root.signal.reason) throw e;
      // Interrupted or timed out: the running step reports that itself as it unwinds,
      // so give the body a moment to end with that step's failure.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<unknown>((resolve) => (timer = setTimeout(resolve, 1000, e)));
      const outcome = await Promise.race([body.then(() => e, (x) => x), grace]);
      clearTimeout(timer);
      throw outcome;
    }
  }

  async step(
    name: string,
    fn: (t: PlaybookContext) => unknown,
    options: StepOptions = {},
  ): Promise<boolean> {
    if (typeof name !== "string" || name === "") {
      throw new TypeError("t.step(name, fn): name must be a non-empty string");
    }
    if (typeof fn !== "function") {
      throw new TypeError(`t.step("${name}", fn): fn must be a function`);
    }
    if (this.finished) {
      throw new PlaybookUsageError(
        `t.step("${name}") was called after playbook "${this.name}" ended: await every t.step`,
      );
    }
    const parent = this.#frame();
    if (parent.signal.aborted) throw parent.signal.reason;
    const path = [...parent.path, name];
    const text = path.join(" › ");
    const result: StepResult = { name, path, status: "passed", durationMs: 0, steps: [] };
    const { observer, info, filter } = this.#init;
    parent.children.push(result);

    let matched = parent.matched;
    let skip: string | undefined;
    if (!matched && filter) {
      if (filter.matches(text)) matched = true;
      else if (!filter.mayContain(text)) skip = `filtered out by --filter ${filter.source}`;
    }
    if (skip === undefined && options.skip) {
      skip = typeof options.skip === "string" ? options.skip : "skipped";
    }
    if (skip !== undefined) {
      result.status = "skipped";
      result.skipReason = skip;
      observer.stepEnd?.(info, result);
      return false;
    }

    const timeoutMs = options.timeout === undefined
      ? this.#stepTimeoutMs
      : parseDuration(options.timeout);
    const own = new AbortController();
    const signal = AbortSignal.any([parent.signal, own.signal]);
    const timer = timeoutMs === undefined
      ? undefined
      : setTimeout(() => own.abort(new StepTimeoutError(path, timeoutMs)), timeoutMs);
    const frame: Frame = { path, signal, children: result.steps, matched };
    observer.stepStart?.(info, { name, path });
    const t0 = performance.now();
    let failed = false;
    let error: unknown;
    try {
      await raceAbort(this.#als.run(frame, async () => await fn(this)), signal);
    } catch (e) {
      failed = true;
      // A wait aborted by the step's own timeout reports the timeout, not the abort.
      error = signal.aborted && e instanceof AbortError && !(e instanceof InterruptedError)
        ? signal.reason
        : e;
    } finally {
      clearTimeout(timer);
    }
    result.durationMs = performance.now() - t0;
    if (!failed) {
      observer.stepEnd?.(info, result);
      return true;
    }
    result.status = "failed";
    if (error instanceof StepFailedError) result.nestedFailure = true;
    else {
      result.failure = describeFailure(error, text, this.#init.ring, this.#consoleTail());
      const exit = await qemuExit(error, this.#init.machine);
      if (exit) result.failure.qemuExit = exit;
    }
    observer.stepEnd?.(info, result);
    throw new StepFailedError(path, { cause: error });
  }

  #consoleTail(): string | undefined {
    return consoleTail(this.#init.machine);
  }

  cleanup(fn: () => unknown): void {
    if (typeof fn !== "function") throw new TypeError("t.cleanup(fn): fn must be a function");
    this.#cleanups.push(fn);
  }

  /**
   * Runs the cleanups, last registered first; each gets `timeoutMs`. Returns the failures.
   * When `interrupted`, a cleanup that fails because QEMU is gone (a terminal's Ctrl-C
   * reaches QEMU too) is only logged.
   */
  async runCleanups(timeoutMs: number, interrupted: boolean): Promise<Failure[]> {
    const failures: Failure[] = [];
    while (this.#cleanups.length > 0) {
      const fn = this.#cleanups.pop()!;
      const ctl = new AbortController();
      const timer = setTimeout(
        () => ctl.abort(new StepTimeoutError(["cleanup"], timeoutMs)),
        timeoutMs,
      );
      const frame: Frame = { path: ["cleanup"], signal: ctl.signal, children: [], matched: true };
      try {
        await raceAbort(this.#als.run(frame, async () => await fn()), ctl.signal);
      } catch (e) {
        if (interrupted && e instanceof ConnectionClosedError) {
          this.#init.log("runner", ["cleanup"], `cleanup skipped, QEMU is gone: ${e.message}`);
        } else {
          failures.push(describeFailure(e, "cleanup", this.#init.ring, undefined));
        }
      } finally {
        clearTimeout(timer);
      }
    }
    return failures;
  }

  log(...args: unknown[]): void {
    const text = args.map((a) => typeof a === "string" ? a : Deno.inspect(a, { depth: 4 }))
      .join(" ");
    this.#init.log("playbook", [...this.#frame().path], text);
  }

  expect<T>(actual: T, label?: string): Expectation<T> {
    return expect(actual, label);
  }

  async expectEvent<N extends EventName>(
    name: N,
    action?: (() => unknown) | null,
    options: ExpectEventOptions<N> = {},
  ): Promise<TypedEvent<N>> {
    const qmp = options.qmp ?? this.qmp;
    const timeoutMs = parseDuration(options.timeout ?? "10s");
    const where = options.where;
    const predicate = where === undefined
      ? undefined
      : typeof where === "function"
      ? where as (e: TypedEvent<N>) => boolean
      : (e: TypedEvent<N>) => matchObject(e.data, where);
    const seen = qmp.listen({ bufferSize: 50, overflow: "drop-oldest" });
    const stop = new AbortController();
    const signal = this.signal;
    const wait = qmp.waitEvent(name, {
      where: predicate,
      signal: AbortSignal.any([signal, stop.signal]),
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      if (action) await action();
      const timedOut = Symbol("timeout");
      const outcome = await Promise.race([
        wait,
        new Promise<typeof timedOut>((
          resolve,
        ) => (timer = setTimeout(resolve, timeoutMs, timedOut))),
      ]);
      if (outcome !== timedOut) return outcome as TypedEvent<N>;
      const events = seen.drain().map((e) =>
        e.data === undefined ? e.event : `${e.event} ${formatShort(e.data, 100)}`
      );
      const filterText = where === undefined
        ? ""
        : ` matching ${typeof where === "function" ? "the predicate" : formatShort(where, 100)}`;
      throw new ExpectationError(
        `expected event ${name}${filterText} within ${formatDuration(timeoutMs)}` +
          `${action ? " after the action" : ""}, but it did not arrive; events received ` +
          `meanwhile: ${events.length > 0 ? events.join(", ") : "none"}`,
        { matcher: "expectEvent", expected: { event: name, where }, actual: events },
      );
    } finally {
      clearTimeout(timer);
      stop.abort();
      seen.close();
    }
  }

  async expectError<E extends Error>(
    action: (() => unknown) | Promise<unknown>,
    expected: ExpectedCommandError | ExpectedErrorType<E> = {},
  ): Promise<QmpCommandError & E> {
    let value: unknown;
    try {
      value = typeof action === "function" ? await action() : await action;
    } catch (e) {
      if (this.signal.aborted) throw e;
      const got = errorText(e);
      if ("type" in expected && expected.type) {
        if (!(e instanceof expected.type)) {
          throw new ExpectationError(
            `expected an error of type ${expected.type.name}, got ${got}`,
            { matcher: "expectError", expected: expected.type.name, actual: got },
            { cause: e },
          );
        }
        if (expected.message && !matchText(e.message, expected.message)) {
          throw new ExpectationError(
            `expected the error message to match ${String(expected.message)}, got ${got}`,
            { matcher: "expectError", expected: String(expected.message), actual: e.message },
            { cause: e },
          );
        }
        return e as QmpCommandError & E;
      }
      const want = expected as ExpectedCommandError;
      const cls = want.class ? ` (${want.class})` : "";
      if (!(e instanceof QmpCommandError)) {
        throw new ExpectationError(
          `expected a QMP command error${cls}, got ${got}`,
          { matcher: "expectError", expected: want.class ?? "QmpCommandError", actual: got },
          { cause: e },
        );
      }
      if (want.class && e.class !== want.class) {
        throw new ExpectationError(
          `expected ${e.command} to fail with ${want.class}, but it failed with ${e.class}: ${e.desc}`,
          { matcher: "expectError", expected: want.class, actual: e.class },
          { cause: e },
        );
      }
      if (want.message && !matchText(e.desc, want.message)) {
        throw new ExpectationError(
          `expected ${e.command}'s error to match ${
            typeof want.message === "string" ? formatShort(want.message) : String(want.message)
          }, got ${formatShort(e.desc)}`,
          { matcher: "expectError", expected: String(want.message), actual: e.desc },
          { cause: e },
        );
      }
      return e as QmpCommandError & E;
    }
    const what = "type" in expected && expected.type
      ? `an error of type ${expected.type.name}`
      : `a QMP error${
        (expected as ExpectedCommandError).class
          ? ` (${(expected as ExpectedCommandError).class})`
          : ""
      }`;
    throw new ExpectationError(
      `expected ${what}, but the action succeeded with ${formatShort(value)}`,
      { matcher: "expectError", expected: what, actual: value },
    );
  }

  async eventually<R>(fn: () => R | Promise<R>, options: EventuallyOptions = {}): Promise<R> {
    const timeoutMs = parseDuration(options.timeout ?? "10s");
    const intervalMs = parseDuration(options.interval ?? "100ms");
    const outer = this.signal;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), timeoutMs);
    const signal = AbortSignal.any([outer, deadline.signal]);
    let attempts = 0;
    let last: unknown;
    let returnedFalse = false;
    try {
      while (!signal.aborted) {
        attempts++;
        try {
          const r = await raceAbort(Promise.resolve().then(fn), signal);
          if (r !== false) return r;
          returnedFalse = true;
          last = undefined;
        } catch (e) {
          if (outer.aborted) throw outer.reason;
          if (deadline.signal.aborted && e === deadline.signal.reason) break;
          if (
            e instanceof PlaybookUsageError ||
            (e instanceof ConnectionClosedError && this.qmp.state === "closed")
          ) {
            throw e;
          }
          last = e;
          returnedFalse = false;
        }
        try {
          await sleep(intervalMs, signal);
        } catch {
          if (outer.aborted) throw outer.reason;
        }
      }
    } finally {
      clearTimeout(timer);
    }
    if (outer.aborted) throw outer.reason;
    const what = options.message ?? "the condition";
    const why = last !== undefined
      ? `last attempt: ${last instanceof Error ? last.message : String(last)}`
      : returnedFalse
      ? "it returned false"
      : "the first attempt did not finish";
    const inner = last instanceof ExpectationError ? last : undefined;
    throw new ExpectationError(
      `eventually: ${what} was not met within ${formatDuration(timeoutMs)} ` +
        `(${attempts} attempt${attempts === 1 ? "" : "s"}); ${why}`,
      {
        matcher: inner ? `eventually ${inner.matcher}` : "eventually",
        expected: inner?.expected,
        actual: inner?.actual,
        diff: inner?.diff,
      },
      { cause: last },
    );
  }

  async launch(options: PlaybookLaunchOptions = {}): Promise<Machine> {
    const { label: given, ...vm } = options;
    const machines = this.#init.machines;
    const label = given ?? `vm${machines.length + 1}`;
    const machine = await launch({
      ...vm,
      signal: this.signal,
      log: (m) => this.#init.log("vm", [...this.#frame().path], m),
      qmp: { transcript: this.#init.transcript(label) },
    });
    liveMachines.add(machine);
    machines.push({ label, machine });
    return machine;
  }

  sleep(duration: Duration): Promise<void> {
    return sleep(parseDuration(duration), this.signal);
  }
}

/** The `--record` file name for a playbook file: `DIR/<name>.jsonl`, unique within `taken`. */
export function recordPath(dir: string, file: string, taken: Set<string>): string {
  const base = (file.split("/").pop() ?? "playbook").replace(/\.playbook\.[cm]?[jt]sx?$/, "")
    .replace(/\.[cm]?[jt]sx?$/, "").replace(/[^\w.-]+/g, "_") || "playbook";
  let candidate = join(dir, `${base}.jsonl`);
  for (let i = 2; taken.has(candidate); i++) candidate = join(dir, `${base}-${i}.jsonl`);
  taken.add(candidate);
  return candidate;
}
