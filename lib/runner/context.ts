/**
 * The `t` of a running playbook ({@link Context}): nested, timed steps with
 * their own abort signals, cleanups, assertions, event and error
 * expectations, polling, extra VMs and `t.skip()`.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { AgentClient } from "../agent/client.ts";
import type { QmpClient, TranscriptEntry, TypedEvent } from "../client.ts";
import type { EventName } from "../qapi/types.ts";
import { type Duration, formatDuration, parseDuration } from "../duration.ts";
import { AbortError, ConnectionClosedError, QmpCommandError } from "../errors.ts";
import { launch, type Machine } from "../machine.ts";
import type { LibvirtDomain } from "../libvirt_domain.ts";
import type { StorageDaemon } from "../storage_daemon.ts";
import {
  ExpectationError,
  InterruptedError,
  PlaybookSkip,
  PlaybookUsageError,
  StepFailedError,
  StepTimeoutError,
} from "./errors.ts";
import { expect, type Expectation, matchObject } from "./expect.ts";
import { consoleTail, describeFailure, errorText, qemuExit } from "./failure.ts";
import type { StepFilter } from "./filter.ts";
import { formatShort } from "./format.ts";
import type {
  EventuallyOptions,
  ExpectedCommandError,
  ExpectedErrorType,
  ExpectEventOptions,
  PlaybookContext,
  PlaybookLaunchOptions,
  StepOptions,
} from "./playbook.ts";
import type {
  Failure,
  LogEntry,
  PlaybookInfo,
  RunObserver,
  StepResult,
  TranscriptRecord,
} from "./results.ts";

/** A step's place in the tree: its path, signal and where its children go. */
export interface Frame {
  path: string[];
  signal: AbortSignal;
  children: StepResult[];
  matched: boolean;
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

/** What a {@link Context} needs from the engine running its playbook. */
export interface ContextInit {
  name: string;
  file: string | undefined;
  qmp: QmpClient;
  machine: Machine | undefined;
  /** The libvirt domain the playbook started (`vm: { libvirt }`), if any. */
  domain?: LibvirtDomain;
  /** The daemon of a `vm: { storageDaemon: true }` playbook. */
  daemon?: StorageDaemon;
  attachedTo: string | undefined;
  tempDir: string;
  root: Frame;
  filter: StepFilter | undefined;
  stepTimeout: Duration | undefined;
  observer: RunObserver;
  info: PlaybookInfo;
  /** `performance.now()` when the playbook started (steps' `startMs` count from it). */
  t0: number;
  log: (source: LogEntry["source"], path: string[], message: string) => void;
  ring: TranscriptRecord[];
  transcript: (vm: string) => (entry: TranscriptEntry) => void;
  machines: { label: string; machine: Machine }[];
  /** Registers a VM launched by `t.launch()` so an emergency stop can kill it. */
  track: (machine: Machine) => void;
}

/** The `t` handed to a playbook body by the engine. */
export class Context implements PlaybookContext {
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
    if (!m && this.#init.daemon) {
      throw new PlaybookUsageError(
        `t.vm is not available: playbook "${this.name}" runs qemu-storage-daemon ` +
          `(vm: { storageDaemon: true }), not a VM; use t.qmp and t.daemon`,
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

  get daemon(): StorageDaemon {
    const d = this.#init.daemon;
    if (!d) {
      throw new PlaybookUsageError(
        this.#init.attachedTo !== undefined
          ? `t.daemon is not available: playbook "${this.name}" is attached with --qmp ` +
            `${this.#init.attachedTo}; use t.qmp`
          : `t.daemon is not available: playbook "${this.name}" launches a VM; ` +
            `use vm: { storageDaemon: true } for a storage daemon`,
      );
    }
    return d;
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
    result.startMs = t0 - this.#init.t0;
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
    if (error instanceof PlaybookSkip) {
      result.status = "skipped";
      result.skipReason = error.reason;
      observer.stepEnd?.(info, result);
      throw error;
    }
    result.status = "failed";
    if (error instanceof StepFailedError) result.nestedFailure = true;
    else {
      result.failure = describeFailure(error, text, this.#init.ring, this.#consoleTail());
      const exit = await qemuExit(error, this.#init.machine ?? this.#init.daemon);
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
      if (this.signal.aborted || e instanceof PlaybookSkip) throw e;
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
          if (e instanceof PlaybookSkip) throw e;
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
    this.#init.track(machine);
    machines.push({ label, machine });
    return machine;
  }

  sleep(duration: Duration): Promise<void> {
    return sleep(parseDuration(duration), this.signal);
  }

  skip(reason?: string): never {
    throw new PlaybookSkip(typeof reason === "string" && reason !== "" ? reason : "t.skip()");
  }
}
