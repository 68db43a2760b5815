/**
 * Launching QEMU: a private QMP socket, the serial console captured, a
 * graceful-then-hard shutdown ladder, and no orphaned QEMU processes.
 *
 * @module
 */
import type { ClientOptions, QmpClient } from "./client.ts";
import { listen, type QmpServer } from "./server.ts";
import { SerialConsole } from "./console.ts";
import { type Duration, formatDuration, parseDuration } from "./duration.ts";
import { type Accel, resolveAccel } from "./accel.ts";
import { boundedWait } from "./deadline.ts";
import {
  AbortError,
  ConnectionClosedError,
  LaunchError,
  QmpError,
  TimeoutError,
} from "./errors.ts";
import { findTinyGuest } from "./guest.ts";
import { guardCommand, killProcessGroup, type OrphanGuard } from "./orphan_guard.ts";
import { AGENT_DEFAULT_MEMORY_MIB, agentArgs, AgentChannel } from "./agent_channel.ts";
import type { AgentClient } from "./agent/client.ts";
import { AgentError } from "./agent/errors.ts";
import { redactCommandLine, redactText } from "./redact.ts";
import { findOnPath, PIPE_GRACE_MS, pump, STDERR_KEEP } from "./child_process.ts";
import { exitedWithin, ladder } from "./shutdown_ladder.ts";

/** Options of {@link launch}. */
export interface LaunchOptions {
  /** QEMU binary (default: `$QMPKIT_QEMU`, else `qemu-system-x86_64` from `PATH`). */
  binary?: string;
  /**
   * Extra QEMU arguments, appended last. Options that would take QEMU out of
   * the launcher's hands are refused with a {@link LaunchError} before anything
   * starts: `-daemonize` (QEMU detaches and outlives `launch()`) and `-runas`
   * (the kernel drops the parent-death signal when QEMU changes user).
   */
  args?: string[];
  /**
   * `-machine` value (default: `"q35"` when a kernel or guest is given, else `"none"`).
   * Ignored when `args` contains `-machine`/`-M`.
   */
  machine?: string;
  /**
   * Accelerator (default `"auto"`: `$QMPKIT_ACCEL` when set, else KVM only when a
   * probe shows it runs guest code; see {@link resolveAccel}). Ignored when
   * `args` contains `-accel`/`-enable-kvm`.
   */
  accel?: Accel;
  /** Memory, e.g. `256` (MiB) or `"1G"` (`-m`). */
  memory?: number | string;
  /** Start paused (`-S`): the guest runs only after `cont`. */
  paused?: boolean;
  /** Kernel image for direct boot (`-kernel`). */
  kernel?: string;
  /** Initial ramdisk (`-initrd`). */
  initrd?: string;
  /** Kernel command line (`-append`). */
  append?: string;
  /**
   * `"tiny"`: boot the project's tiny Linux guest (built by `deno task guest`),
   * which prints a ready marker on the console and powers off on `system_powerdown`.
   */
  guest?: "tiny";
  /**
   * Add a guest agent channel: a virtio-serial port named `org.qemu.guest_agent.0` on a private
   * unix socket, reached with {@link Machine.agent}. The tiny guest starts `qemu-ga` on it at
   * boot. Memory defaults to 256 MiB then (qemu-ga holds up to 16 MiB of a command's output and
   * is OOM-killed in 128 MiB when a command prints 20 MB).
   */
  agent?: boolean;
  /** A name for messages and `-name` (default `qmpkit-<n>`). */
  name?: string;
  /**
   * Capture the first serial port (`-serial stdio`) in {@link Machine.console}
   * (default: true unless the machine is `none`).
   */
  console?: boolean;
  /** Also append console output to this file. */
  consoleLog?: string;
  /**
   * Deadline for QEMU to start and its monitor to answer (default `"30s"`);
   * past it QEMU is killed and a {@link LaunchError} with `timeoutMs` is thrown.
   */
  timeout?: Duration;
  /** Cancels the launch: QEMU is killed and an {@link AbortError} is thrown. */
  signal?: AbortSignal;
  /**
   * Options for the QMP client (`oob`, `transcript`, `commandTimeout`, ...). Not `reconnect`:
   * QEMU dials this connection itself (accept mode) and cannot dial again; a second client
   * uses {@link Machine.socketPath}.
   */
  qmp?: Omit<ClientOptions, "reconnect">;
  /**
   * Also serve a QMP monitor over TLS on 127.0.0.1 (a free port), for tests of
   * remote access: `dir` is a `tls-creds-x509` directory (`ca-cert.pem`,
   * `server-cert.pem`, `server-key.pem`, and `dh-params.pem`, without which
   * QEMU spends minutes generating DH parameters). Its address is
   * {@link Machine.tlsAddress}; {@link Machine.qmp} stays on the private unix socket.
   */
  tls?: LaunchTlsOptions;
  /** Receives one line per lifecycle step (launch, each shutdown step), e.g. `console.error`. */
  log?: (message: string) => void;
}

/** The TLS monitor of {@link LaunchOptions.tls}. */
export interface LaunchTlsOptions {
  /** The credentials directory (QEMU's `tls-creds-x509` `dir=`). */
  dir: string;
  /** Require a client certificate signed by the directory's CA (`verify-peer=on`; default false). */
  verifyPeer?: boolean;
}

/** Options of {@link Machine.shutdown}. */
export interface ShutdownOptions {
  /**
   * Start with `system_powerdown` (ACPI) and wait for the guest to power off.
   * Default: true when the VM boots a kernel/guest and is running.
   */
  powerdown?: boolean;
  /** How long to wait for the guest to power off (default `"30s"`). */
  powerdownTimeout?: Duration;
  /** How long to wait after `quit` (default `"5s"`). */
  quitTimeout?: Duration;
  /** How long to wait after SIGTERM (default `"5s"`). */
  termTimeout?: Duration;
}

/** One step of the shutdown ladder, as recorded in {@link Machine.shutdownSteps}. */
export interface ShutdownStep {
  /** The step taken. */
  step: "powerdown" | "quit" | "SIGTERM" | "SIGKILL";
  /** How long the step took, in ms. */
  ms: number;
  /** Whether QEMU had exited at the end of the step. */
  exited: boolean;
  /** Why the step did not end QEMU (an error, a timeout), when it did not. */
  note?: string;
}

let counter = 0;
const live = new Set<Machine>();
let unloadHooked = false;

/**
 * A running QEMU started by {@link launch}. Dispose it (`await using`) or call
 * {@link Machine.shutdown} to stop it; the QEMU process is killed with its
 * owner in any case.
 */
export class Machine implements AsyncDisposable {
  /** The connected, negotiated QMP client. */
  readonly qmp: QmpClient;
  /** The serial console (empty and not writable when not captured). */
  readonly console: SerialConsole;
  /** The name given or generated. */
  readonly name: string;
  /** QEMU's process id. */
  readonly pid: number;
  /** The private directory holding the QMP sockets (mode 0700; removed at exit). */
  readonly dir: string;
  /**
   * Path of a second QMP monitor, in server mode and free for another client (the CLI,
   * `--keep-vm`, `socat`, `connect(vm.socketPath, { fdPassing: true })`). {@link Machine.qmp}
   * is not on it: QEMU dialed {@link launch} on a socket of its own (accept mode).
   */
  readonly socketPath: string;
  /** `tls://127.0.0.1:PORT` of the TLS monitor, when launched with `tls`. */
  readonly tlsAddress?: string;
  /** The full QEMU command line, secrets included: print `redactCommandLine(commandLine)`. */
  readonly commandLine: string[];
  /** The accelerator in use. */
  readonly accel: "kvm" | "tcg";
  /** Why that accelerator: from `args`, the `accel` option, `QMPKIT_ACCEL`, or the KVM probe. */
  readonly accelReason: string;
  /**
   * What kills QEMU if this process dies: `"pdeathsig"` (the kernel, even on
   * SIGKILL; needs permission to run `setpriv`) or `"exit-hook"` (a normal exit only).
   */
  readonly orphanGuard: OrphanGuard;
  /** Resolves with QEMU's exit status once it has exited and everything is cleaned up. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** The shutdown ladder's steps, filled by {@link Machine.shutdown}. */
  readonly shutdownSteps: ShutdownStep[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #stderr: { text: string };
  readonly #hasGuest: boolean;
  readonly #log: (message: string) => void;
  readonly #agent: AgentChannel | undefined;
  #status: Deno.CommandStatus | undefined;
  #shutdown: Promise<Deno.CommandStatus> | undefined;

  /** @internal Use {@link launch}. */
  constructor(init: {
    qmp: QmpClient;
    console: SerialConsole;
    name: string;
    child: Deno.ChildProcess;
    dir: string;
    socketPath: string;
    tlsAddress?: string;
    commandLine: string[];
    accel: "kvm" | "tcg";
    accelReason: string;
    orphanGuard: OrphanGuard;
    stderr: { text: string };
    exited: Promise<Deno.CommandStatus>;
    hasGuest: boolean;
    log: (message: string) => void;
    agent?: AgentChannel;
  }) {
    this.qmp = init.qmp;
    this.console = init.console;
    this.name = init.name;
    this.#child = init.child;
    this.pid = init.child.pid;
    this.dir = init.dir;
    this.socketPath = init.socketPath;
    this.tlsAddress = init.tlsAddress;
    this.commandLine = init.commandLine;
    this.accel = init.accel;
    this.accelReason = init.accelReason;
    this.orphanGuard = init.orphanGuard;
    this.#stderr = init.stderr;
    this.#hasGuest = init.hasGuest;
    this.#log = init.log;
    this.#agent = init.agent;
    this.exited = init.exited.then(async (s) => {
      await init.agent?.close();
      return (this.#status = s);
    });
  }

  /**
   * The guest agent client (launched with `agent: true`). It connects to the agent's socket on
   * first use; the agent answers once the guest has booted and started `qemu-ga`, so wait for it
   * first with `await vm.agent.waitReady({ timeout: "60s" })`. When `qemu-ga` dies in the guest
   * (QEMU reports `VSERPORT_CHANGE`), pending calls fail at once instead of waiting. Closed by
   * {@link Machine.shutdown} and when QEMU exits. Throws {@link AgentError} without `agent: true`.
   *
   * @example
   * ```ts ignore
   * await using vm = await launch({ guest: "tiny", agent: true });
   * await vm.agent.waitReady({ timeout: "60s" });
   * const { stdout } = await vm.agent.exec("/bin/uname", ["-r"]);
   * ```
   */
  get agent(): AgentClient {
    if (!this.#agent) {
      throw new AgentError(
        `${this.name} has no guest agent channel: launch it with { agent: true } ` +
          `(and a guest that runs qemu-ga, e.g. guest: "tiny")`,
      );
    }
    return this.#agent.client;
  }

  /** Path of the guest agent's unix socket (launched with `agent: true`), e.g. for `qmp agent`. */
  get agentSocketPath(): string | undefined {
    return this.#agent?.socketPath;
  }

  /** QEMU's stderr so far (the last 64 KiB), secrets redacted. */
  get log(): string {
    return redactText(this.#stderr.text);
  }

  /** QEMU's exit code, once it exited (`undefined` while running). */
  get exitCode(): number | undefined {
    return this.#status?.code;
  }

  /** The signal that ended QEMU, if one did (e.g. `"SIGKILL"`). */
  get signal(): string | undefined {
    return this.#status?.signal ?? undefined;
  }

  /**
   * How QEMU ended, for error reports: `"killed by SIGKILL"` or `"exited with
   * code 1"`, plus the tail of its stderr when there is any; `undefined` while
   * it runs.
   */
  describeExit(): string | undefined {
    const st = this.#status;
    if (!st) return undefined;
    const how = st.signal ? `killed by ${st.signal}` : `exited with code ${st.code}`;
    const tail = this.log.trim().split("\n").slice(-5).join("\n");
    return tail ? `${how}; stderr:\n${tail}` : how;
  }

  /** True while QEMU runs. */
  get running(): boolean {
    return this.#status === undefined;
  }

  /** Waits for QEMU to exit by itself (e.g. the guest powers off). */
  async wait(options: { timeout?: Duration } = {}): Promise<Deno.CommandStatus> {
    if (options.timeout === undefined) return await this.exited;
    const ms = parseDuration(options.timeout);
    if (await this.#exitedWithin(ms)) return await this.exited;
    throw new QmpError(`${this.name} did not exit within ${formatDuration(ms)}`);
  }

  /**
   * Stops QEMU, as gently as it allows: `system_powerdown` and wait (when a
   * guest runs), then `quit`, then SIGTERM, then SIGKILL, each with a timeout.
   * Every step is recorded in {@link Machine.shutdownSteps} and logged.
   * Safe to call repeatedly and concurrently.
   */
  shutdown(options: ShutdownOptions = {}): Promise<Deno.CommandStatus> {
    this.#shutdown ??= this.#runShutdown(options);
    return this.#shutdown;
  }

  /** Kills QEMU at once (SIGKILL) and waits for it to be gone. */
  async kill(): Promise<Deno.CommandStatus> {
    this.#signal("SIGKILL");
    return await this.exited;
  }

  /** Shuts down (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  async #runShutdown(options: ShutdownOptions): Promise<Deno.CommandStatus> {
    await this.#agent?.close(); // pending agent calls fail now, not when QEMU is gone
    // Each step gets one budget, shared by its action (a QMP command) and the wait for exit.
    const step = ladder(this, this.shutdownSteps, this.#log);
    const qmpOpen = () => this.qmp.state === "open";
    let powerdown = options.powerdown;
    if (powerdown === undefined) {
      powerdown = this.#hasGuest && qmpOpen() &&
        await this.qmp.execute("query-status", undefined, { timeout: "2s" }).then(
          (s) => s.running,
          () => false,
        );
    }
    const done = (powerdown && qmpOpen() &&
      await step(
        "powerdown",
        parseDuration(options.powerdownTimeout ?? "30s"),
        (budget) => this.qmp.execute("system_powerdown", undefined, { timeout: budget }),
      )) ||
      (qmpOpen() &&
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

  /** @internal Kills QEMU synchronously (process exit hook). */
  killNow(): void {
    this.#signal("SIGKILL");
    killProcessGroup(this.pid);
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch { /* best effort */ }
  }
}

/**
 * Starts QEMU with a private QMP socket, connects and negotiates, and
 * captures the serial console. Throws {@link LaunchError} (with QEMU's exit
 * code and stderr) when QEMU cannot start or exits early — never hangs.
 *
 * @example
 * ```ts ignore
 * await using vm = await launch({ guest: "tiny", memory: 256 });
 * await vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "60s" });
 * console.log(await vm.qmp.execute("query-status"));
 * await vm.shutdown(); // powerdown → SHUTDOWN → exit
 * ```
 */
export async function launch(options: LaunchOptions = {}): Promise<Machine> {
  const startedAt = performance.now();
  const binary = options.binary ?? Deno.env.get("QMPKIT_QEMU") ?? "qemu-system-x86_64";
  const name = options.name ?? `qmpkit-${Deno.pid}-${++counter}`;
  const log = options.log ?? (() => {});
  refuseEscapes(binary, options.args ?? []);
  if ((options.qmp as ClientOptions | undefined)?.reconnect) {
    throw new LaunchError(
      "launch() has no qmp.reconnect: QEMU dials the launcher's monitor itself and cannot dial " +
        "again. For a client that reconnects, use connect(vm.socketPath, { reconnect: true }).",
      { commandLine: [] },
    );
  }
  let { kernel, initrd, append } = options;
  if (options.guest === "tiny") {
    const guest = await findTinyGuest();
    kernel ??= guest.kernel;
    initrd ??= guest.initrd;
    append ??= guest.append;
    if (options.agent && !guest.agent) {
      throw new LaunchError(
        `The tiny guest (${
          guest.kernel.replace(/\/[^/]*$/, "")
        }) was built without the guest agent ` +
          `(qemu-ga): install it (apt-get install -y qemu-guest-agent) and rebuild: deno task guest`,
        { commandLine: [] },
      );
    }
  } else if (options.guest !== undefined) {
    throw new TypeError(`Unknown guest ${JSON.stringify(options.guest)}: only "tiny" exists`);
  }
  const userArgs = options.args ?? [];
  const has = (...flags: string[]) => userArgs.some((a) => flags.includes(a));
  const machine = options.machine ?? (kernel ? "q35" : "none");
  const machineName = has("-machine", "-M") ? argValue(userArgs, "-machine", "-M") : machine;
  const timeoutMs = parseDuration(options.timeout ?? "30s");
  const { accel, reason: accelReason } = has("-accel", "-enable-kvm")
    ? {
      accel: userArgs.includes("-enable-kvm") || argValue(userArgs, "-accel")?.startsWith("kvm")
        ? "kvm" as const
        : "tcg" as const,
      reason: "from args",
    }
    : await boundedWait<{ accel: "kvm" | "tcg"; reason: string }>(
      `Launch of ${name}`,
      { signal: options.signal },
      (resolve, reject) => {
        resolveAccel(options.accel ?? "auto", {
          binary,
          machine: machineName ?? machine,
        }).then(resolve, reject);
      },
    );
  const wantConsole = options.console ?? !machineName?.startsWith("none");

  const tlsArgs = options.tls ? await tlsMonitorArgs(options.tls, binary) : [];
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-vm-" });
  await Deno.chmod(dir, 0o700);
  const socketPath = `${dir}/qmp.sock`;
  // Accept mode: QEMU dials this socket while it starts, so nothing polls for a socket file,
  // and QEMU's exit racing accept() makes a QEMU that dies early fail the launch at once.
  let server: QmpServer;
  try {
    server = await listen(`unix:${dir}/qmp-launch.sock`, options.qmp);
  } catch (cause) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new LaunchError(
      `Cannot listen for ${name}'s QMP monitor: ${cause instanceof Error ? cause.message : cause}`,
      { commandLine: [] },
      { cause },
    );
  }
  const agentSocketPath = options.agent ? `${dir}/qga.sock` : undefined;
  const memory = options.memory ?? (options.agent ? AGENT_DEFAULT_MEMORY_MIB : undefined);
  const qemuArgs = [
    "-name",
    name,
    ...(has("-machine", "-M") ? [] : ["-machine", machine]),
    ...(has("-accel", "-enable-kvm") ? [] : ["-accel", accel]),
    "-display",
    "none",
    "-monitor",
    "none",
    "-qmp",
    server.qemuArg,
    "-qmp",
    `unix:${socketPath},server=on,wait=off`,
    ...tlsArgs,
    ...(wantConsole && !has("-serial") ? ["-serial", "stdio"] : []),
    ...(memory !== undefined && !has("-m") ? ["-m", String(memory)] : []),
    ...(agentSocketPath ? agentArgs(agentSocketPath) : []),
    ...(options.paused ? ["-S"] : []),
    ...(kernel ? ["-kernel", kernel] : []),
    ...(initrd ? ["-initrd", initrd] : []),
    ...(append ? ["-append", append] : []),
    ...userArgs,
  ];
  const resolved = findOnPath(binary);
  if (resolved === null) {
    await server.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new LaunchError(
      `Cannot start ${binary}: ${binary.includes("/") ? "no such file" : "not found on PATH"}. ` +
        `Install QEMU (Debian: apt-get install ` +
        `qemu-system-x86) or pass binary: "/path/to/qemu-system-..."`,
      { commandLine: [binary, ...qemuArgs] },
    );
  }
  let consoleFile: Deno.FsFile | undefined;
  if (options.consoleLog) {
    try {
      consoleFile = await Deno.open(options.consoleLog, { create: true, append: true });
    } catch (cause) {
      await server.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw new LaunchError(
        `Cannot open the console log ${options.consoleLog}: ` +
          `${cause instanceof Error ? cause.message : cause}`,
        { commandLine: [binary, ...qemuArgs] },
        { cause },
      );
    }
  }
  const guarded = guardCommand(binary, qemuArgs);
  const commandLine = [binary, ...qemuArgs];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(guarded.command, {
      args: guarded.args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // Own session: a terminal's Ctrl-C goes to the owner only, which can then run
      // its QMP cleanups before stopping QEMU. The death signal still covers the owner dying.
      detached: true,
    }).spawn();
  } catch (cause) {
    consoleFile?.close();
    await server.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    const notFound = cause instanceof Deno.errors.NotFound;
    throw new LaunchError(
      notFound
        ? `Cannot start ${binary}: not found. Install QEMU (Debian: apt-get install ` +
          `qemu-system-x86) or pass binary: "/path/to/qemu-system-..."`
        : `Cannot start ${binary}: ${cause instanceof Error ? cause.message : cause}`,
      { commandLine },
      { cause },
    );
  }
  log(`${name}: started pid ${child.pid}: ${redactCommandLine(commandLine).join(" ")}`);

  // Pumps: stderr into a bounded tail, stdout into the console.
  const stderr = { text: "" };
  const stderrPump = pump(child.stderr, (t) => {
    stderr.text = (stderr.text + t).slice(-STDERR_KEEP);
  });
  const encoder = new TextEncoder();
  const stdin = child.stdin.getWriter();
  let stdinClosed = false;
  const serial = new SerialConsole(
    wantConsole
      ? async (bytes) => {
        if (stdinClosed) {
          throw new ConnectionClosedError(`Cannot write to ${name}'s console: QEMU has exited`, {
            reason: "peer",
          });
        }
        await stdin.write(bytes);
      }
      : undefined,
    consoleFile ? (t) => void consoleFile!.write(encoder.encode(t)).catch(() => {}) : undefined,
  );
  const stdoutPump = pump(child.stdout, (t) => serial.append(t));

  const exited = (async () => {
    const status = await child.status;
    // Whatever is left in QEMU's process group (a helper it spawned, the child of a
    // wrapper script) may hold its stdout/stderr open: kill it, and do not wait for
    // the pipes' EOF longer than it takes to read what is already in them.
    killProcessGroup(child.pid);
    const drained = Promise.all([stdoutPump.done, stderrPump.done]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, PIPE_GRACE_MS)))]);
    clearTimeout(timer);
    stdoutPump.cancel();
    stderrPump.cancel();
    await drained;
    stdinClosed = true;
    await stdin.close().catch(() => {});
    consoleFile?.close();
    serial.end(
      new Error(
        `QEMU exited (${status.signal ? `signal ${status.signal}` : `code ${status.code}`})`,
      ),
    );
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    for (const m of live) if (m.pid === child.pid) live.delete(m);
    return status;
  })();

  // Accept QEMU's connection, racing its early exit (the process itself: its pipes may
  // outlive it) and the deadline (counted from the start of launch()).
  const exitAbort = new AbortController();
  let early: Deno.CommandStatus | undefined;
  child.status.then((s) => {
    early = s;
    exitAbort.abort();
  });
  const signals = [exitAbort.signal, ...(options.signal ? [options.signal] : [])];
  let qmp: QmpClient;
  try {
    qmp = await server.accept({
      timeout: Math.max(1, timeoutMs - (performance.now() - startedAt)),
      signal: AbortSignal.any(signals),
    });
  } catch (cause) {
    // Decide what happened before killing QEMU: once killed, it has "exited" too.
    const exitedEarly = early !== undefined;
    const aborted = !exitedEarly && options.signal?.aborted === true;
    const timedOut = !exitedEarly && !aborted && cause instanceof TimeoutError;
    if (!exitedEarly) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    const status = await exited;
    const killed = `QEMU (pid ${child.pid}) was killed`;
    if (aborted) {
      throw new AbortError(`Launch of ${name} (${killed})`, { cause: options.signal!.reason });
    }
    const message = exitedEarly
      ? `${binary} exited before its QMP monitor was ready (` +
        (status.signal ? `signal ${status.signal}` : `exit code ${status.code}`) + ")"
      : timedOut
      ? `${name} did not connect to its QMP monitor within ${formatDuration(timeoutMs)}; ${killed}`
      : `Cannot use ${name}'s QMP monitor: ` +
        `${cause instanceof Error ? cause.message : String(cause)}; ${killed}`;
    throw new LaunchError(message, {
      exitCode: exitedEarly ? status.code : undefined,
      signal: exitedEarly ? status.signal ?? undefined : undefined,
      timeoutMs: timedOut ? timeoutMs : undefined,
      stderr: stderr.text.slice(-4000),
      commandLine,
    }, { cause });
  } finally {
    await server.close(); // one QEMU per launch: stop listening, remove the socket file
  }
  let tlsAddress: string | undefined;
  if (options.tls) {
    try {
      tlsAddress = await tlsMonitorAddress(qmp);
    } catch (cause) {
      await qmp.close();
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await exited;
      throw new LaunchError(
        `Cannot find the port of ${name}'s TLS monitor: ` +
          `${cause instanceof Error ? cause.message : String(cause)}; QEMU was killed`,
        { stderr: stderr.text.slice(-4000), commandLine },
        { cause },
      );
    }
  }
  const vm = new Machine({
    qmp,
    console: serial,
    name,
    child,
    dir,
    socketPath,
    tlsAddress,
    commandLine,
    accel,
    accelReason,
    orphanGuard: guarded.guard,
    stderr,
    exited,
    hasGuest: kernel !== undefined,
    log,
    agent: agentSocketPath ? new AgentChannel(agentSocketPath, qmp) : undefined,
  });
  live.add(vm);
  hookProcessExit();
  log(`${name}: QMP ready (QEMU ${versionString(qmp)}, ${accel}: ${accelReason})`);
  return vm;
}

const TLS_MONITOR = "qmpkit-tls-mon";

/** QEMU arguments of the TLS monitor; checks the credentials directory first. */
async function tlsMonitorArgs(tls: LaunchTlsOptions, binary: string): Promise<string[]> {
  const dir = tls.dir;
  const args = [
    "-object",
    `tls-creds-x509,id=qmpkit-tls,dir=${dir.replaceAll(",", ",,")},endpoint=server,` +
    `verify-peer=${tls.verifyPeer ? "on" : "off"}`,
    "-chardev",
    `socket,id=${TLS_MONITOR},host=127.0.0.1,port=0,server=on,wait=off,tls-creds=qmpkit-tls`,
    "-mon",
    `chardev=${TLS_MONITOR},mode=control`,
  ];
  for (const file of ["ca-cert.pem", "server-cert.pem", "server-key.pem", "dh-params.pem"]) {
    try {
      await Deno.stat(`${dir}/${file}`);
    } catch (cause) {
      throw new LaunchError(
        `The TLS credentials directory ${dir} has no ${file}` +
          (file === "dh-params.pem"
            ? " (without it QEMU spends minutes generating DH parameters; write one with " +
              `openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out ${dir}/dh-params.pem)`
            : ""),
        { commandLine: [binary, ...args] },
        { cause },
      );
    }
  }
  return args;
}

/** The TLS monitor listens on port 0: ask QEMU which port it got. */
async function tlsMonitorAddress(qmp: QmpClient): Promise<string> {
  const chardevs = await qmp.execute("query-chardev", undefined, { timeout: "5s" });
  const filename = chardevs.find((c) => c.label === TLS_MONITOR)?.filename ?? "";
  const port = /:(\d+)(,|$)/.exec(filename.replace(/^disconnected:/, ""))?.[1];
  if (port === undefined) {
    throw new QmpError(`unexpected chardev filename ${JSON.stringify(filename)}`);
  }
  return `tls://127.0.0.1:${port}`;
}

function argValue(args: string[], ...flags: string[]): string | undefined {
  for (let i = 0; i < args.length - 1; i++) if (flags.includes(args[i])) return args[i + 1];
  return undefined;
}

function versionString(qmp: QmpClient): string {
  const v = qmp.greeting.version.qemu;
  return `${v.major}.${v.minor}.${v.micro}`;
}

/**
 * Options that take QEMU out of the launcher's hands, with why. A second
 * monitor (`-qmp`, `-mon`, `-chardev`) is fine: ours is always there, first.
 * `-pidfile` and `-chroot` are fine too (the socket is bound before the chroot).
 */
const ESCAPES: Record<string, string> = {
  daemonize: "QEMU would detach from its owner and keep running after launch() gives up " +
    "(no exit status, no console, no cleanup, no parent-death signal)",
  runas: "the kernel drops QEMU's parent-death signal when it changes user, so it would " +
    "outlive its owner",
};

function refuseEscapes(binary: string, args: string[]): void {
  for (const [i, arg] of args.entries()) {
    const option = /^--?([a-z-]+)$/.exec(arg)?.[1];
    // QEMU 8.1+ spells -runas as -run-with user=...
    const why = option === "run-with" && /(^|,)user=/.test(args[i + 1] ?? "")
      ? ESCAPES.runas
      : option !== undefined && Object.hasOwn(ESCAPES, option)
      ? ESCAPES[option]
      : undefined;
    if (why) {
      throw new LaunchError(
        `launch() refuses ${arg}: ${why}. Leave it out, or start QEMU yourself and attach with ` +
          `connect().`,
        { commandLine: [binary, ...args] },
      );
    }
  }
}

function hookProcessExit(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  globalThis.addEventListener("unload", () => {
    for (const vm of live) vm.killNow();
  });
}
