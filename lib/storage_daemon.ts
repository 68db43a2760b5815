/**
 * Launching `qemu-storage-daemon`: QEMU's block layer without a VM (block
 * jobs, NBD / vhost-user-blk / FUSE exports), automated over QMP with its
 * block-only schema. The same guarantees as `launch()`: a private QMP socket
 * in a 0700 temp dir, no orphaned process, a `quit` → SIGTERM → SIGKILL
 * shutdown ladder, typed errors and bounded waits, its output captured.
 *
 * @module
 */
import { type ClientOptions, connect, type QmpClient } from "./client.ts";
import { type Duration, formatDuration, parseDuration } from "./duration.ts";
import {
  AbortError,
  ConnectionClosedError,
  LaunchError,
  QmpError,
  TimeoutError,
} from "./errors.ts";
import { guardCommand, killProcessGroup, type OrphanGuard } from "./orphan_guard.ts";
import { redactCommandLine, redactText } from "./redact.ts";
import { findOnPath, PIPE_GRACE_MS, pump, STDERR_KEEP } from "./child_process.ts";
import { exitedWithin, ladder } from "./shutdown_ladder.ts";
import type { ShutdownStep } from "./machine.ts";
import type { StorageDaemonCommands } from "./qapi/storage_daemon_types.ts";

/** Options of {@link launchStorageDaemon}. */
export interface StorageDaemonOptions {
  /**
   * The binary (default: `$QMPKIT_STORAGE_DAEMON`, else `qemu-storage-daemon`
   * from `PATH`; Debian ships it in `qemu-utils`).
   */
  binary?: string;
  /**
   * More daemon arguments: `--blockdev ...`, `--object ...`, `--nbd-server ...`,
   * `--export ...`. They come before the monitor's (the daemon handles its options in
   * order), so one it rejects ends it before the monitor exists: a clean {@link LaunchError}. `--daemonize` is refused
   * with a {@link LaunchError} (the daemon would detach and outlive its owner).
   */
  args?: string[];
  /** A name for messages (default `qmpkit-qsd-<pid>-<n>`). */
  name?: string;
  /**
   * Deadline for the daemon to start and its monitor to answer (default `"30s"`);
   * past it the daemon is killed and a {@link LaunchError} with `timeoutMs` is thrown.
   */
  timeout?: Duration;
  /** Cancels the launch: the daemon is killed and an {@link AbortError} is thrown. */
  signal?: AbortSignal;
  /** Options for the QMP client (`transcript`, `commandTimeout`, ...). */
  qmp?: ClientOptions;
  /** Receives one line per lifecycle step (launch, each shutdown step), e.g. `console.error`. */
  log?: (message: string) => void;
}

/** Options of {@link StorageDaemon.shutdown}. */
export interface StorageDaemonShutdownOptions {
  /** How long to wait after `quit` (default `"5s"`). */
  quitTimeout?: Duration;
  /** How long to wait after SIGTERM (default `"5s"`). */
  termTimeout?: Duration;
}

const live = new Set<StorageDaemon>();
let unloadHooked = false;
let counter = 0;

/**
 * A running `qemu-storage-daemon` started by {@link launchStorageDaemon}.
 * Dispose it (`await using`) or call {@link StorageDaemon.shutdown}; the
 * process is killed with its owner in any case.
 */
export class StorageDaemon implements AsyncDisposable {
  /**
   * The connected, negotiated QMP client, typed for the daemon's schema: a
   * command only the system emulator has (`query-status`, `device_add`, ...)
   * fails `deno check`.
   */
  readonly qmp: QmpClient<StorageDaemonCommands>;
  /** The name given or generated. */
  readonly name: string;
  /** The daemon's process id. */
  readonly pid: number;
  /** The private directory (mode 0700) holding the QMP socket; removed at exit. */
  readonly dir: string;
  /** Path of the QMP unix socket. */
  readonly socketPath: string;
  /** The full command line, secrets included: print `redactCommandLine(commandLine)`. */
  readonly commandLine: string[];
  /** What kills the daemon if this process dies (see `launch()`'s `orphanGuard`). */
  readonly orphanGuard: OrphanGuard;
  /** Resolves with the exit status once the daemon exited and everything is cleaned up. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** The shutdown ladder's steps, filled by {@link StorageDaemon.shutdown}. */
  readonly shutdownSteps: ShutdownStep[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #output: { text: string };
  readonly #log: (message: string) => void;
  #status: Deno.CommandStatus | undefined;
  #shutdown: Promise<Deno.CommandStatus> | undefined;

  /** @internal Use {@link launchStorageDaemon}. */
  constructor(init: {
    qmp: QmpClient<StorageDaemonCommands>;
    name: string;
    child: Deno.ChildProcess;
    dir: string;
    socketPath: string;
    commandLine: string[];
    orphanGuard: OrphanGuard;
    output: { text: string };
    exited: Promise<Deno.CommandStatus>;
    log: (message: string) => void;
  }) {
    this.qmp = init.qmp;
    this.name = init.name;
    this.#child = init.child;
    this.pid = init.child.pid;
    this.dir = init.dir;
    this.socketPath = init.socketPath;
    this.commandLine = init.commandLine;
    this.orphanGuard = init.orphanGuard;
    this.#output = init.output;
    this.#log = init.log;
    this.exited = init.exited.then((s) => (this.#status = s));
  }

  /** What the daemon printed (stdout and stderr, the last 64 KiB), secrets redacted. */
  get log(): string {
    return redactText(this.#output.text);
  }

  /** The exit code, once exited (`undefined` while running). */
  get exitCode(): number | undefined {
    return this.#status?.code;
  }

  /** The signal that ended the daemon, if one did. */
  get signal(): string | undefined {
    return this.#status?.signal ?? undefined;
  }

  /** True while the daemon runs. */
  get running(): boolean {
    return this.#status === undefined;
  }

  /** How the daemon ended (`"exited with code 1"`, plus its last output), `undefined` while running. */
  describeExit(): string | undefined {
    const st = this.#status;
    if (!st) return undefined;
    const how = st.signal ? `killed by ${st.signal}` : `exited with code ${st.code}`;
    const tail = this.log.trim().split("\n").slice(-5).join("\n");
    return tail ? `${how}; output:\n${tail}` : how;
  }

  /** Waits for the daemon to exit by itself. */
  async wait(options: { timeout?: Duration } = {}): Promise<Deno.CommandStatus> {
    if (options.timeout === undefined) return await this.exited;
    const ms = parseDuration(options.timeout);
    if (await this.#exitedWithin(ms)) return await this.exited;
    throw new QmpError(`${this.name} did not exit within ${formatDuration(ms)}`);
  }

  /**
   * Stops the daemon: `quit`, then SIGTERM, then SIGKILL, each with a
   * timeout; steps are recorded in {@link StorageDaemon.shutdownSteps} and
   * logged. Safe to call repeatedly and concurrently.
   */
  shutdown(options: StorageDaemonShutdownOptions = {}): Promise<Deno.CommandStatus> {
    this.#shutdown ??= this.#runShutdown(options);
    return this.#shutdown;
  }

  /** Kills the daemon at once (SIGKILL) and waits for it to be gone. */
  async kill(): Promise<Deno.CommandStatus> {
    this.#signal("SIGKILL");
    return await this.exited;
  }

  /** Shuts down (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #runShutdown(options: StorageDaemonShutdownOptions): Promise<Deno.CommandStatus> {
    const step = ladder(this, this.shutdownSteps, this.#log);
    const done = (this.qmp.state === "open" &&
      await step("quit", parseDuration(options.quitTimeout ?? "5s"), async (budget) => {
        try {
          await this.qmp.execute("quit", undefined, { timeout: budget });
        } catch (e) {
          if (!(e instanceof ConnectionClosedError)) throw e;
        }
      })) ||
      await step("SIGTERM", parseDuration(options.termTimeout ?? "5s"), () => {
        this.#signal("SIGTERM");
      }) ||
      await step("SIGKILL", 10_000, () => this.#signal("SIGKILL"));
    if (!done) throw new QmpError(`${this.name} (pid ${this.pid}) survived SIGKILL`);
    return await this.exited;
  }

  #signal(sig: Deno.Signal): void {
    if (!this.running) return;
    try {
      this.#child.kill(sig);
    } catch { /* already gone */ }
  }

  #exitedWithin(ms: number): Promise<boolean> {
    return exitedWithin(this, ms);
  }

  /** @internal Kills the daemon synchronously (process exit hook). */
  killNow(): void {
    this.#signal("SIGKILL");
    killProcessGroup(this.pid);
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch { /* best effort */ }
  }
}

/**
 * Starts `qemu-storage-daemon` with a private QMP monitor, connects and
 * negotiates. Throws {@link LaunchError} (with the exit code and output) when
 * the daemon cannot start or exits early (a bad `--blockdev`, say), never hangs.
 *
 * @example
 * ```ts ignore
 * await using qsd = await launchStorageDaemon({
 *   args: ["--blockdev", "driver=file,node-name=f0,filename=/tmp/disk.qcow2"],
 * });
 * await qsd.qmp.execute("blockdev-add", { driver: "qcow2", "node-name": "d0", file: "f0" });
 * await qsd.qmp.execute("nbd-server-start", {
 *   addr: { type: "unix", path: "/tmp/nbd.sock" },
 * });
 * await qsd.qmp.execute("block-export-add", {
 *   type: "nbd",
 *   id: "e0",
 *   "node-name": "d0",
 *   writable: true,
 * });
 * ```
 */
export async function launchStorageDaemon(
  options: StorageDaemonOptions = {},
): Promise<StorageDaemon> {
  const startedAt = performance.now();
  const binary = options.binary ?? Deno.env.get("QMPKIT_STORAGE_DAEMON") ??
    "qemu-storage-daemon";
  const name = options.name ?? `qmpkit-qsd-${Deno.pid}-${++counter}`;
  const log = options.log ?? (() => {});
  const userArgs = options.args ?? [];
  const escape = userArgs.find((a) => /^--?daemonize$/.test(a));
  if (escape) {
    throw new LaunchError(
      `launchStorageDaemon() refuses ${escape}: the daemon would detach from its owner and keep ` +
        `running after it (no exit status, no cleanup, no parent-death signal). Leave it out, ` +
        `or start the daemon yourself and attach with connect().`,
      { commandLine: [binary, ...userArgs] },
    );
  }
  const timeoutMs = parseDuration(options.timeout ?? "30s");
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-qsd-" });
  await Deno.chmod(dir, 0o700);
  const socketPath = `${dir}/qmp.sock`;
  const args = [
    ...userArgs,
    "--chardev",
    `socket,id=qmpkit-qmp,path=${socketPath.replaceAll(",", ",,")},server=on,wait=off`,
    "--monitor",
    "chardev=qmpkit-qmp,mode=control",
  ];
  const commandLine = [binary, ...args];
  const notFound = () =>
    new LaunchError(
      `Cannot start ${binary}: ${
        binary.includes("/") ? "no such file" : "not found on PATH"
      }. Install it (Debian: apt-get install qemu-utils) or pass binary: "/path/to/qemu-storage-daemon"`,
      { commandLine },
    );
  if (findOnPath(binary) === null) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw notFound();
  }
  const guarded = guardCommand(binary, args);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(guarded.command, {
      args: guarded.args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true, // own session: a terminal's Ctrl-C reaches the owner, which stops it
    }).spawn();
  } catch (cause) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    if (cause instanceof Deno.errors.NotFound) throw notFound();
    throw new LaunchError(
      `Cannot start ${binary}: ${cause instanceof Error ? cause.message : cause}`,
      { commandLine },
      { cause },
    );
  }
  log(`${name}: started pid ${child.pid}: ${redactCommandLine(commandLine).join(" ")}`);

  // stdout and stderr, interleaved as they come, into one bounded tail.
  const output = { text: "" };
  const keep = (t: string) => void (output.text = (output.text + t).slice(-STDERR_KEEP));
  const pumps = [pump(child.stdout, keep), pump(child.stderr, keep)];
  const exited = (async () => {
    const status = await child.status;
    killProcessGroup(child.pid);
    const drained = Promise.all(pumps.map((p) => p.done));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, PIPE_GRACE_MS)))]);
    clearTimeout(timer);
    for (const p of pumps) p.cancel();
    await drained;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    for (const d of live) if (d.pid === child.pid) live.delete(d);
    return status;
  })();

  const exitAbort = new AbortController();
  let early: Deno.CommandStatus | undefined;
  child.status.then((s) => {
    early = s;
    exitAbort.abort();
  });
  let qmp: QmpClient;
  try {
    qmp = await connect(`unix:${socketPath}`, {
      ...options.qmp,
      retry: true,
      timeout: Math.max(1, timeoutMs - (performance.now() - startedAt)),
      signal: AbortSignal.any([exitAbort.signal, ...(options.signal ? [options.signal] : [])]),
    });
  } catch (cause) {
    if (early === undefined && !options.signal?.aborted && !(cause instanceof TimeoutError)) {
      // The connection broke: the daemon is most likely exiting; let it say why (bounded).
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([child.status, new Promise((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
    }
    const exitedEarly = early !== undefined;
    const aborted = !exitedEarly && options.signal?.aborted === true;
    const timedOut = !exitedEarly && !aborted && cause instanceof TimeoutError;
    if (!exitedEarly) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    const status = await exited;
    const killed = `the daemon (pid ${child.pid}) was killed`;
    if (aborted) {
      throw new AbortError(`Launch of ${name} (${killed})`, { cause: options.signal!.reason });
    }
    const message = exitedEarly
      ? `${binary} exited before its QMP monitor was ready (` +
        (status.signal ? `signal ${status.signal}` : `exit code ${status.code}`) + ")"
      : timedOut
      ? `${name} did not answer on its QMP socket within ${formatDuration(timeoutMs)}; ${killed}`
      : `Cannot use ${name}'s QMP socket: ` +
        `${cause instanceof Error ? cause.message : String(cause)}; ${killed}`;
    throw new LaunchError(message, {
      exitCode: exitedEarly ? status.code : undefined,
      signal: exitedEarly ? status.signal ?? undefined : undefined,
      timeoutMs: timedOut ? timeoutMs : undefined,
      stderr: output.text.slice(-4000),
      commandLine,
    }, { cause });
  }
  const daemon = new StorageDaemon({
    // One connection, two views: the daemon's schema is what this monitor speaks.
    qmp: qmp as unknown as QmpClient<StorageDaemonCommands>,
    name,
    child,
    dir,
    socketPath,
    commandLine,
    orphanGuard: guarded.guard,
    output,
    exited,
    log,
  });
  live.add(daemon);
  if (!unloadHooked) {
    unloadHooked = true;
    globalThis.addEventListener("unload", () => {
      for (const d of live) d.killNow();
    });
  }
  const v = qmp.greeting.version.qemu;
  log(`${name}: QMP ready (qemu-storage-daemon ${v.major}.${v.minor}.${v.micro})`);
  return daemon;
}
