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
import { type Duration, parseDuration } from "./duration.ts";
import { LaunchError, TimeoutError } from "./errors.ts";
import { guardCommand, killAtExit, type OrphanGuard, releaseAtExit } from "./orphan_guard.ts";
import { redactCommandLine, redactText } from "./redact.ts";
import {
  describeExitWithTail,
  findOnPath,
  killNowSync,
  pump,
  reap,
  signalChild,
  spawnDetached,
  STDERR_KEEP,
} from "./child_process.ts";
import { launchFailure, watchEarlyExit } from "./launch_race.ts";
import { ladder, quitThenSignal, waitForExit } from "./shutdown_ladder.ts";
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
    return this.#status && describeExitWithTail(this.#status, this.log, "output");
  }

  /** Waits for the daemon to exit by itself. */
  async wait(options: { timeout?: Duration } = {}): Promise<Deno.CommandStatus> {
    return await waitForExit(this, options.timeout);
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
    await quitThenSignal(
      this,
      step,
      {
        qmpOpen: () => this.qmp.state === "open",
        quit: (budget) => this.qmp.execute("quit", undefined, { timeout: budget }),
      },
      (sig) => this.#signal(sig),
      options,
    );
    return await this.exited;
  }

  #signal(sig: Deno.Signal): void {
    if (this.running) signalChild(this.#child, sig);
  }

  /** @internal Kills the daemon synchronously (process exit hook). */
  killNow(): void {
    killNowSync(this.#child, this.running, this.dir);
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
  const guarded = guardCommand(
    binary,
    args,
    "qemu-storage-daemon started by launchStorageDaemon()",
  );
  let child: Deno.ChildProcess;
  try {
    child = spawnDetached(guarded, "null");
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
    const status = await reap(child, pumps);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    releaseAtExit(child.pid);
    return status;
  })();

  const early = watchEarlyExit(child);
  let qmp: QmpClient;
  try {
    qmp = await connect(`unix:${socketPath}`, {
      ...options.qmp,
      retry: true,
      timeout: Math.max(1, timeoutMs - (performance.now() - startedAt)),
      signal: AbortSignal.any([early.signal, ...(options.signal ? [options.signal] : [])]),
    });
  } catch (cause) {
    if (
      early.status === undefined && !options.signal?.aborted && !(cause instanceof TimeoutError)
    ) {
      // The connection broke: the daemon is most likely exiting; let it say why (bounded).
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([child.status, new Promise((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
    }
    throw await launchFailure(cause, {
      child,
      exited,
      early,
      signal: options.signal,
      name,
      binary,
      commandLine,
      timeoutMs,
      who: "the daemon",
      timedOutAs: "did not answer on its QMP socket",
      monitor: "QMP socket",
      output: () => output.text,
    });
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
  killAtExit(daemon);
  const v = qmp.greeting.version.qemu;
  log(`${name}: QMP ready (qemu-storage-daemon ${v.major}.${v.minor}.${v.micro})`);
  return daemon;
}
