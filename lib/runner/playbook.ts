/**
 * Playbooks: named, step-by-step QMP scenarios with typed assertions, run by
 * `deno task play` (`scripts/play.ts`) against a VM of their own or an
 * existing one (`--qmp ADDRESS`).
 *
 * @example
 * ```ts ignore
 * import { playbook } from "../mod.ts";
 *
 * export default playbook({ name: "pause and resume", vm: { guest: "tiny" } }, async (t) => {
 *   await t.step("boots", () => t.vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "60s" }));
 *   await t.step("pause", async () => {
 *     await t.expectEvent("STOP", () => t.qmp.execute("stop"));
 *     t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "paused" });
 *   });
 * });
 * ```
 *
 * @module
 */
import type { QmpClient, TypedEvent } from "../client.ts";
import type { EventName } from "../qapi/types.ts";
import type { Duration } from "../duration.ts";
import type { QmpCommandError } from "../errors.ts";
import type { LaunchOptions, Machine } from "../machine.ts";
import type { StorageDaemon, StorageDaemonOptions } from "../storage_daemon.ts";
import type { QmpCommands } from "../qapi/types.ts";
import type { StorageDaemonCommands } from "../qapi/storage_daemon_types.ts";
import type { AgentClient } from "../agent/client.ts";
import type { LibvirtVmOptions } from "../libvirt_domain.ts";
import type { DeepPartial, Expectation } from "./expect.ts";

/** How a playbook's VM is launched: {@link LaunchOptions} without the runner-owned members. */
export type PlaybookVmOptions = Omit<LaunchOptions, "signal" | "log" | "qmp">;

/**
 * A playbook VM that libvirt runs: a transient domain defined and started from `xml`
 * (at `uri`, default `qemu:///system`), destroyed after the cleanups, even on Ctrl-C.
 * `t.qmp` and `t.agent` go through libvirt; `t.vm` (a launched QEMU) is not available.
 */
export interface PlaybookLibvirtVm {
  /** The domain to start. */
  libvirt: LibvirtVmOptions;
}

/**
 * A playbook whose target is `qemu-storage-daemon` instead of a VM:
 * `vm: { storageDaemon: true, args: [...] }` (the rest as
 * {@link StorageDaemonOptions}). `t.qmp` is then typed for the daemon's schema
 * and `t.daemon` is the daemon; `t.vm` and `t.agent` are unavailable.
 */
export type PlaybookStorageDaemonOptions =
  & { storageDaemon: true }
  & Omit<StorageDaemonOptions, "signal" | "log" | "qmp">;

/** A playbook's name, VM and limits. */
export interface PlaybookMeta {
  /** The playbook's name, shown in reports and matched by `--filter`. */
  name: string;
  /** A longer description, shown by `--list`. */
  description?: string;
  /**
   * The VM to launch for this playbook (`{ guest: "tiny" }`, `{ machine: "pc", paused: true }`),
   * or a libvirt domain to start (`{ libvirt: { xml } }`, see {@link PlaybookLibvirtVm}).
   * Ignored when the runner attaches to an existing VM with `--qmp`. When omitted, the
   * playbook can only run with `--qmp`. `{ storageDaemon: true }` starts a
   * `qemu-storage-daemon` instead (see {@link PlaybookStorageDaemonOptions}).
   */
  vm?: PlaybookVmOptions | PlaybookLibvirtVm | PlaybookStorageDaemonOptions;
  /** Limit for the whole playbook, VM launch included (default `"5m"`; `--timeout` overrides). */
  timeout?: Duration;
  /** Default limit of every step that sets none (default: no limit but the playbook's). */
  stepTimeout?: Duration;
  /**
   * Tags for `--tag` (e.g. `["block", "slow"]`): words without spaces or
   * commas, not starting with `!`.
   */
  tags?: string[];
  /** Skip the playbook: `true`, or a string saying why (see also {@link playbook.skip}). */
  skip?: boolean | string;
  /**
   * Run only the playbooks marked `only` (see {@link playbook.only}); for
   * debugging: `--forbid-only` makes CI fail on a forgotten one.
   */
  only?: boolean;
}

/** Options of {@link PlaybookContext.step}. */
export interface StepOptions {
  /** Fail the step with a `StepTimeoutError` (and abort `t.signal`) after this long. */
  timeout?: Duration;
  /** Skip the step: `true`, or a string saying why. */
  skip?: boolean | string;
}

/** Options of {@link PlaybookContext.expectEvent}. */
export interface ExpectEventOptions<N extends EventName> {
  /** Only accept an event whose `data` deep-partially matches, or that passes the predicate. */
  where?: DeepPartial<TypedEvent<N>["data"]> | ((event: TypedEvent<N>) => boolean);
  /** How long to wait for the event after the action (default `"10s"`). */
  timeout?: Duration;
  /** The connection to watch (default `t.qmp`), e.g. a second VM's `vm.qmp`. */
  qmp?: QmpClient;
}

/** The QMP error classes QEMU defines (`QapiErrorClass`); other strings are accepted too. */
export type QmpErrorClass =
  | "GenericError"
  | "CommandNotFound"
  | "DeviceNotActive"
  | "DeviceNotFound"
  | "KVMMissingCap"
  | (string & Record<never, never>);

/** What {@link PlaybookContext.expectError} expects of a QMP command failure. */
export interface ExpectedCommandError {
  /** The QMP error class, e.g. `"DeviceNotFound"`. */
  class?: QmpErrorClass;
  /** A substring of, or a RegExp matching, QEMU's description. */
  message?: string | RegExp;
}

/** What {@link PlaybookContext.expectError} expects of any other error. */
export interface ExpectedErrorType<E extends Error> {
  /** The error's class, e.g. `TimeoutError`. */
  type: abstract new (...args: never[]) => E;
  /** A substring of, or a RegExp matching, the error's message. */
  message?: string | RegExp;
}

/** Options of {@link PlaybookContext.eventually}. */
export interface EventuallyOptions {
  /** Give up after this long (default `"10s"`). */
  timeout?: Duration;
  /** Pause between attempts (default `"100ms"`). */
  interval?: Duration;
  /** Describes the condition in the failure message. */
  message?: string;
}

/** Options of {@link PlaybookContext.launch}: a VM plus a label for transcripts. */
export interface PlaybookLaunchOptions extends PlaybookVmOptions {
  /** Label of this VM in transcripts and recordings (default `vm2`, `vm3`, ...). */
  label?: string;
}

/**
 * The `t` handed to a playbook: its VM and QMP connection, steps, cleanups
 * and assertions. `C` is the command map of `t.qmp`: QEMU's (`QmpCommands`),
 * or the storage daemon's for a `vm: { storageDaemon: true }` playbook.
 */
export interface PlaybookContext<C = QmpCommands> {
  /** The playbook's name. */
  readonly name: string;
  /** The file the playbook was loaded from, when known. */
  readonly file: string | undefined;
  /** The QMP connection to the playbook's VM (launched, or attached with `--qmp`). */
  readonly qmp: QmpClient<C>;
  /**
   * The storage daemon of a `vm: { storageDaemon: true }` playbook (pid, log,
   * socket). Throws `PlaybookUsageError` for other playbooks and with `--qmp`.
   */
  readonly daemon: StorageDaemon;
  /**
   * The launched VM (console, pid, log). Throws `PlaybookUsageError` when the
   * runner attached to an existing VM with `--qmp`: check {@link attached} first.
   */
  readonly vm: Machine;
  /**
   * The guest agent of the launched VM, when its `vm` has `agent: true` (e.g.
   * `vm: { guest: "tiny", agent: true }`): run programs, read and write files inside the
   * guest. It answers once the guest has booted, so wait for it first, e.g.
   * `await t.step("agent answers", () => t.agent.waitReady({ timeout: "90s", signal: t.signal }))`.
   * Throws `PlaybookUsageError` without an agent or when attached with `--qmp`.
   *
   * @example
   * ```ts ignore
   * t.expect(await t.agent.exec("/bin/uname", ["-r"])).toMatchObject({ exitCode: 0 });
   * ```
   */
  readonly agent: AgentClient;
  /** True when attached to an existing VM (`--qmp`); then {@link vm} is unavailable. */
  readonly attached: boolean;
  /**
   * Aborted when the current step or the playbook times out, or the run is
   * interrupted (Ctrl-C). Pass it to long waits. It is the signal of the step
   * running in the current async context (steps may run concurrently), so
   * read it inside the step, e.g. `const { signal } = t;` before registering
   * callbacks that run later.
   */
  readonly signal: AbortSignal;
  /** A private temporary directory for this playbook, removed when it ends. */
  readonly tempDir: string;
  /** The path of the step running now, outermost first (empty outside steps). */
  readonly stepPath: readonly string[];

  /**
   * Runs a named, timed step; steps nest. Resolves `true` when it passed,
   * `false` when it was skipped (`skip` or `--filter`). When it fails the
   * failure is reported and the returned promise rejects with a
   * `StepFailedError`, so the steps after it do not run.
   */
  step(
    name: string,
    fn: (t: PlaybookContext<C>) => unknown,
    options?: StepOptions,
  ): Promise<boolean>;
  /**
   * Registers a cleanup. Cleanups run last-in first-out when the playbook
   * ends, also after a failure, timeout or Ctrl-C; a failing cleanup fails
   * the playbook.
   */
  cleanup(fn: () => unknown): void;
  /** Logs a line under the current step (shown live and in reports). */
  log(...args: unknown[]): void;
  /**
   * Starts a typed assertion on `actual`; `label` prefixes failure messages.
   *
   * @example
   * ```ts ignore
   * t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "paused" });
   * ```
   */
  expect<T>(actual: T, label?: string): Expectation<T>;
  /**
   * Arms a wait for event `name` (and `where`), then runs `action`, then
   * waits for the event and returns it. Because the wait is armed first, an
   * event QEMU sends before the command's reply is never missed. Fails with
   * an `ExpectationError` listing the events that did arrive.
   *
   * @example
   * ```ts ignore
   * const ev = await t.expectEvent("SHUTDOWN", () => t.qmp.execute("system_powerdown"), {
   *   where: { guest: true },
   *   timeout: "30s",
   * });
   * ```
   */
  expectEvent<N extends EventName>(
    name: N,
    action?: (() => unknown) | null,
    options?: ExpectEventOptions<N>,
  ): Promise<TypedEvent<N>>;
  /**
   * Expects `action` to fail with a QMP command error (of `class`, with a
   * matching description) and returns the error.
   *
   * @example
   * ```ts ignore
   * await t.expectError(() => t.qmp.execute("device_del", { id: "nope" }), {
   *   class: "DeviceNotFound",
   * });
   * ```
   */
  expectError(
    action: (() => unknown) | Promise<unknown>,
    expected?: ExpectedCommandError,
  ): Promise<QmpCommandError>;
  /** Expects `action` to fail with an error of `expected.type` and returns it. */
  expectError<E extends Error>(
    action: (() => unknown) | Promise<unknown>,
    expected: ExpectedErrorType<E>,
  ): Promise<E>;
  /**
   * Calls `fn` until it returns without throwing (and not `false`), at most
   * for `timeout`, and returns its result. Assertions inside `fn` make good
   * conditions. On timeout, fails with the last attempt's error.
   *
   * @example
   * ```ts ignore
   * await t.eventually(async () => {
   *   const [job] = await t.qmp.execute("query-jobs");
   *   t.expect(job.status).toBe("concluded");
   * }, { timeout: "20s" });
   * ```
   */
  eventually<R>(fn: () => R | Promise<R>, options?: EventuallyOptions): Promise<R>;
  /**
   * Launches another VM for this playbook (e.g. a migration target); it is
   * shut down when the playbook ends and its QMP traffic is recorded.
   */
  launch(options?: PlaybookLaunchOptions): Promise<Machine>;
  /** Waits for `duration` (aborted with {@link signal}). */
  sleep(duration: Duration): Promise<void>;
  /**
   * Skips the rest of the playbook, like Playwright's `test.skip()` inside a
   * test: the step calling it (and the steps around it) end as skipped with
   * `reason`, the remaining steps do not run, cleanups still run, and the
   * playbook is reported as skipped (unless something failed before).
   *
   * @example
   * ```ts ignore
   * await t.step("needs KVM", () => {
   *   if (!hasKvm) t.skip("KVM is not available here");
   * });
   * ```
   */
  skip(reason?: string): never;
}

/** The body of a playbook. */
export type PlaybookFn = (t: PlaybookContext) => unknown;

/** The meta of a playbook run against `qemu-storage-daemon`: `vm: { storageDaemon: true }`. */
export interface StorageDaemonPlaybookMeta extends PlaybookMeta {
  /** The daemon to start (its arguments, binary, timeout). */
  vm: PlaybookStorageDaemonOptions;
}

/** The body of a storage daemon playbook: `t.qmp` speaks the daemon's schema. */
export type StorageDaemonPlaybookFn = (t: PlaybookContext<StorageDaemonCommands>) => unknown;

/** A playbook definition, as returned by {@link playbook}; export it as the module's default. */
export interface Playbook {
  /** Marks the object as a playbook (checked when a playbook file is loaded). */
  readonly kind: "qmpkit.playbook";
  /** The playbook's name, VM and limits. */
  readonly meta: Readonly<PlaybookMeta>;
  /** The body. */
  readonly fn: PlaybookFn;
}

function definePlaybook(meta: PlaybookMeta | string, fn: PlaybookFn): Playbook {
  const m: PlaybookMeta = typeof meta === "string" ? { name: meta } : { ...meta };
  if (typeof m.name !== "string" || m.name.trim() === "") {
    throw new TypeError("playbook(meta, fn): meta.name must be a non-empty string");
  }
  if (typeof fn !== "function") {
    throw new TypeError(`playbook "${m.name}": the second argument must be a function`);
  }
  if (m.tags !== undefined) {
    if (!Array.isArray(m.tags)) {
      throw new TypeError(`playbook "${m.name}": meta.tags must be an array of strings`);
    }
    for (const tag of m.tags) {
      if (typeof tag !== "string" || !/^[^\s,!][^\s,]*$/.test(tag)) {
        throw new TypeError(
          `playbook "${m.name}": tag ${JSON.stringify(tag)} must be a non-empty word ` +
            "without spaces or commas, not starting with !",
        );
      }
    }
    m.tags = Object.freeze([...m.tags]) as string[];
  }
  return Object.freeze({ kind: "qmpkit.playbook" as const, meta: Object.freeze(m), fn });
}

/** The {@link playbook} function, with its `skip` and `only` variants. */
export interface PlaybookFactory {
  /**
   * Defines a playbook. Export the result as the default export of a
   * `*.playbook.ts` file and run it with `deno task play FILE`.
   */
  (meta: StorageDaemonPlaybookMeta, fn: StorageDaemonPlaybookFn): Playbook;
  /**
   * Defines a playbook. Export the result as the default export of a
   * `*.playbook.ts` file and run it with `deno task play FILE`.
   */
  (meta: PlaybookMeta | string, fn: PlaybookFn): Playbook;
  /** Defines a playbook that is skipped (reported as skipped, never run): `meta.skip` set. */
  skip(meta: StorageDaemonPlaybookMeta, fn: StorageDaemonPlaybookFn): Playbook;
  /** Defines a playbook that is skipped (reported as skipped, never run): `meta.skip` set. */
  skip(meta: PlaybookMeta | string, fn: PlaybookFn): Playbook;
  /**
   * Defines a focused playbook: when any playbook of a run is `only`, the
   * others are skipped. `--forbid-only` (for CI) refuses to run them.
   */
  only(meta: StorageDaemonPlaybookMeta, fn: StorageDaemonPlaybookFn): Playbook;
  /**
   * Defines a focused playbook: when any playbook of a run is `only`, the
   * others are skipped. `--forbid-only` (for CI) refuses to run them.
   */
  only(meta: PlaybookMeta | string, fn: PlaybookFn): Playbook;
}

/**
 * Defines a playbook. Export the result as the default export of a
 * `*.playbook.ts` file and run it with `deno task play FILE`.
 * `playbook.skip(...)` skips it, `playbook.only(...)` focuses on it.
 *
 * @example
 * ```ts ignore
 * export default playbook({ name: "stop and go", vm: { machine: "pc", paused: true } }, async (t) => {
 *   await t.step("cont", () => t.expectEvent("RESUME", () => t.qmp.execute("cont")));
 * });
 * ```
 */
export const playbook: PlaybookFactory = Object.assign(definePlaybook, {
  skip(meta: PlaybookMeta | string, fn: PlaybookFn): Playbook {
    const m = typeof meta === "string" ? { name: meta } : meta;
    return definePlaybook({ ...m, skip: m.skip || "playbook.skip" }, fn);
  },
  only(meta: PlaybookMeta | string, fn: PlaybookFn): Playbook {
    const m = typeof meta === "string" ? { name: meta } : meta;
    return definePlaybook({ ...m, only: true }, fn);
  },
}) as PlaybookFactory;

/** True when a playbook's `vm` asks for a storage daemon (`{ storageDaemon: true }`). */
export function isStorageDaemonVm(
  vm: PlaybookMeta["vm"],
): vm is PlaybookStorageDaemonOptions {
  return typeof vm === "object" && vm !== null &&
    (vm as { storageDaemon?: unknown }).storageDaemon === true;
}

/** True when `value` is a playbook made by {@link playbook} (from any copy of the library). */
export function isPlaybook(value: unknown): value is Playbook {
  return typeof value === "object" && value !== null &&
    (value as { kind?: unknown }).kind === "qmpkit.playbook" &&
    typeof (value as { fn?: unknown }).fn === "function" &&
    typeof (value as { meta?: { name?: unknown } }).meta?.name === "string";
}
