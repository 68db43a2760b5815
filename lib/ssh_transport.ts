/**
 * QMP over SSH: a unix socket on another host, reached with the system OpenSSH
 * client and the user's own keys, agent and configuration.
 *
 * How: `ssh -N -L LOCAL:REMOTE` forwards a fresh local unix socket (in a
 * private 0700 temp dir) to QEMU's socket on the remote host, and the client
 * connects to the local one. It needs nothing on the remote host beyond sshd
 * (no socat, no nc, no shell): OpenSSH 9.2's `ssh -W` cannot reach a unix
 * socket, `-L` can. The forward opens lazily, so a missing remote socket shows
 * only when connecting: the transport waits for the first bytes (QEMU greets
 * at once) before it is handed out, and reads ssh's stderr to say what failed
 * (for a remote socket sshd could not open, the host's SFTP subsystem is asked
 * what is at the path: ssh_probe.ts).
 *
 * ssh always runs with `BatchMode=yes` (it never prompts: no passwords, no
 * host-key questions), `ExitOnForwardFailure=yes`, its own connection
 * (`ControlMaster=no`, `ControlPath=none`: a shared master could outlive the
 * client), `ConnectTimeout` from the connect deadline and keep-alives. Each
 * transport owns one ssh process: closing it kills ssh and removes the temp
 * dir; the kernel kills ssh if the owner dies (`setpriv --pdeathsig`, see
 * orphan_guard.ts).
 *
 * @module
 */
import { formatAddress, type SshAddress } from "./address.ts";
import { AbortError, SshError, type SshFailure, TimeoutError } from "./errors.ts";
import { guardCommand, killProcessGroup } from "./orphan_guard.ts";
import { describeRemotePath } from "./ssh_probe.ts";
import type { OpenOptions, Transport } from "./transport.ts";

/** How to run ssh for an `ssh://` address (`ConnectOptions.ssh`). */
export interface SshOptions {
  /**
   * ssh configuration file (`ssh -F FILE`) instead of `~/.ssh/config`. Useful
   * because ssh finds `~/.ssh` through the password database, not `$HOME`.
   */
  configFile?: string;
  /** Private key file (`ssh -i FILE`). qmpkit passes the path only; it never reads the key. */
  identityFile?: string;
  /**
   * More ssh arguments, e.g. `["-o", "StrictHostKeyChecking=accept-new"]`.
   * They override qmpkit's defaults (`ServerAliveInterval=15`,
   * `ServerAliveCountMax=3`, `LogLevel=INFO`) but not what the tunnel needs
   * (`BatchMode=yes`, `ExitOnForwardFailure=yes`, `ControlMaster=no`,
   * `ControlPath=none`, `ConnectTimeout`). Flags that would detach ssh, hide
   * its messages or replace the connection (`-f -M -S -O -W -G -E -q -V`) are
   * refused.
   */
  options?: string[];
  /** The ssh program (default `"ssh"`, from `PATH`). */
  binary?: string;
}

/** ssh flags that take a value (OpenSSH 9.2 `ssh(1)`). */
const VALUE_FLAGS = new Set("BbcDEeFIiJLlmOoPpQRSWw");
/** Flags that would break the tunnel or our view of it. */
const REFUSED_FLAGS: Record<string, string> = {
  f: "-f sends ssh to the background, where nothing ends it",
  M: "-M makes a shared master connection that can outlive the client",
  S: "-S shares another connection; qmpkit needs its own",
  O: "-O controls a master connection instead of connecting",
  W: "-W replaces the forward qmpkit sets up",
  G: "-G only prints the configuration",
  E: "-E moves ssh's messages to a file, hiding its errors",
  q: "-q hides ssh's errors",
  V: "-V only prints the version",
};
/** How long an EOF before any byte waits for ssh's "channel N: open failed" line. */
const EXPLAIN_MS = 300;
/** How long an EOF on a working tunnel waits to see whether ssh died (then it says why). */
const LOSS_MS = 100;
const STDERR_KEEP = 16 * 1024;

/**
 * Opens a QMP byte stream to `address` through ssh. Resolves once the remote
 * socket has sent its first bytes (the QMP greeting); rejects with
 * {@link SshError} (what failed, with ssh's message), {@link TimeoutError}
 * (the deadline passed: a hung name lookup, a silent host, a socket that never
 * speaks) or {@link AbortError}. With `retry`, a remote socket that cannot be
 * opened yet (QEMU still starting) is tried again through the same ssh, and an
 * sshd that refuses connections with a new ssh, until the deadline. Called by
 * `openTransport` for `ssh://` addresses.
 */
export async function openSshTransport(
  address: SshAddress,
  options: OpenOptions & { ssh?: SshOptions },
): Promise<SshTransport> {
  const where = formatAddress(address);
  const ssh = options.ssh ?? {};
  checkOptions(ssh, where);
  let delay = 50;
  for (let attempt = 1;; attempt++) {
    if (options.signal?.aborted) throw new AbortError(`Connecting to ${where}`);
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-ssh-" });
    const tunnel = new Tunnel(address, where, dir);
    try {
      await Deno.chmod(dir, 0o700);
      tunnel.start(ssh, options.deadline);
      return await tunnel.open(options);
    } catch (err) {
      await tunnel.dispose();
      // With retry, an sshd that refuses or drops connections (the host still booting)
      // gets a new ssh until the deadline, as a refused unix socket gets a new connect.
      const left = options.deadline - Date.now();
      if (!options.retry || !refused(err)) throw err;
      if (left <= delay) {
        throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs, {
          cause: err,
          hint: `gave up after ${attempt} attempts (last: ${(err as SshError).sshMessage})`,
        });
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
    }
  }
}

/** An ssh that could not connect because sshd refused or reset the connection. */
function refused(err: unknown): boolean {
  return err instanceof SshError && err.failure === "unreachable" &&
    /Connection refused|Connection reset|Connection closed by/.test(err.sshMessage ?? "");
}

/** The byte stream of one ssh tunnel; closing it ends the ssh process. */
export class SshTransport implements Transport {
  #conn: Deno.UnixConn;
  #tunnel: Tunnel;
  #head: Uint8Array | undefined;
  #closed = false;

  /** @internal Made by {@link openSshTransport}. */
  constructor(conn: Deno.UnixConn, tunnel: Tunnel, head: Uint8Array) {
    this.#conn = conn;
    this.#tunnel = tunnel;
    this.#head = head.length > 0 ? head : undefined;
  }

  /** The ssh process id (for diagnostics and tests). */
  get pid(): number {
    return this.#tunnel.pid;
  }

  /** Resolves once ssh has exited and the temp dir is gone (after {@link close}). */
  get done(): Promise<void> {
    return this.#tunnel.done;
  }

  /** Reads bytes from the remote socket; `null` when it (or the tunnel) closed. */
  async read(p: Uint8Array): Promise<number | null> {
    if (this.#head) {
      const n = Math.min(p.length, this.#head.length);
      p.set(this.#head.subarray(0, n));
      this.#head = n < this.#head.length ? this.#head.subarray(n) : undefined;
      return n;
    }
    let n: number | null;
    let failure: unknown;
    try {
      n = await this.#conn.read(p);
      if (n !== null) return n;
    } catch (err) {
      failure = err;
    }
    // The end: closed by us, the remote socket closed (QEMU exited), or ssh died (network
    // gone, keep-alives unanswered). Either way this tunnel is done: end ssh before
    // reporting it, so that whoever awaits the read loop (a client's close()) awaits ssh too.
    const lost = this.#closed ? undefined : await this.#tunnel.explainLoss(failure);
    this.close();
    await this.#tunnel.dispose();
    if (lost !== undefined) throw lost;
    return null;
  }

  /** Writes bytes to the remote socket. */
  async write(p: Uint8Array): Promise<number> {
    try {
      return await this.#conn.write(p);
    } catch (err) {
      if (this.#closed) throw err;
      throw await this.#tunnel.explainLoss(err);
    }
  }

  /** Closes the stream and ends ssh (see {@link done}). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    void this.#tunnel.dispose();
  }
}

const live = new Set<Tunnel>();
let unloadHooked = false;

/** One ssh process, its stderr, and the local socket's temp dir. */
class Tunnel {
  readonly address: SshAddress;
  readonly where: string;
  readonly dir: string;
  readonly local: string;
  #child: Deno.ChildProcess | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;
  #exited: Deno.CommandStatus | undefined;
  #stderr = "";
  #stderrChanged: (() => void)[] = [];
  #pump: Promise<void> = Promise.resolve();
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #disposing: Promise<void> | undefined;
  #binary = "ssh";
  /** ssh's options for this host (without the forward), for a second look through SFTP. */
  #connArgs: string[] = [];

  constructor(address: SshAddress, where: string, dir: string) {
    this.address = address;
    this.where = where;
    this.dir = dir;
    this.local = `${dir}/qmp.sock`;
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  get done(): Promise<void> {
    return this.#disposing ?? Promise.resolve();
  }

  /** Spawns ssh; throws {@link SshError} when it cannot be run. */
  start(ssh: SshOptions, deadline: number): void {
    const binary = ssh.binary ?? "ssh";
    this.#binary = binary;
    const a = this.address;
    const seconds = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
    this.#connArgs = [
      // What the tunnel needs: first, because ssh keeps the first value of each option.
      "-o",
      "BatchMode=yes",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      "ControlMaster=no",
      "-o",
      "ControlPath=none",
      "-o",
      `ConnectTimeout=${seconds}`,
      ...(ssh.configFile !== undefined ? ["-F", ssh.configFile] : []),
      ...(ssh.identityFile !== undefined ? ["-i", ssh.identityFile] : []),
      ...(ssh.options ?? []),
      // Defaults the user's options may override.
      "-o",
      "ServerAliveInterval=15",
      "-o",
      "ServerAliveCountMax=3",
      // "channel N: open failed" (the remote socket) is logged at INFO.
      "-o",
      "LogLevel=INFO",
      ...(a.user !== undefined ? ["-l", a.user] : []),
      ...(a.port !== undefined ? ["-p", String(a.port)] : []),
    ];
    const args = [...this.#connArgs, "-N", "-L", `${this.local}:${a.path}`, "--", a.hostname];
    const cmd = guardCommand(binary, args, "ssh started by connect()");
    try {
      this.#child = new Deno.Command(cmd.command, {
        args: cmd.args,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        // Own session: a terminal's Ctrl-C reaches the owner, which may still need QMP
        // for its cleanups, not ssh; no terminal for ssh to prompt on either.
        detached: true,
      }).spawn();
    } catch (cause) {
      throw missingBinary(binary, this.where, cause);
    }
    live.add(this);
    hookProcessExit();
    const child = this.#child;
    this.#reader = child.stderr.getReader();
    this.#pump = this.#readStderr(this.#reader);
    this.#status = child.status.then(async (s) => {
      // A ProxyCommand ssh started may hold stderr open: end the whole group. Then let
      // the pump read ssh's last words, which say why it exited.
      killProcessGroup(child.pid);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#pump, new Promise((r) => (timer = setTimeout(r, 500)))]);
      clearTimeout(timer);
      this.#exited = s;
      this.#notify();
      return s;
    });
  }

  async #readStderr(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        this.#stderr = (this.#stderr + decoder.decode(value, { stream: true })).slice(
          -STDERR_KEEP,
        );
        this.#notify();
      }
    } catch { /* cancelled */ }
  }

  #notify(): void {
    const waiters = this.#stderrChanged;
    this.#stderrChanged = [];
    for (const w of waiters) w();
  }

  /** Resolves at the next stderr output or ssh's exit, or after `ms`. */
  #changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#stderrChanged.push(done);
    });
  }

  /**
   * Waits for the local socket, connects and reads the first bytes. Retries a
   * remote socket that fails to open when `options.retry`.
   */
  async open(options: OpenOptions): Promise<SshTransport> {
    const { deadline, signal } = options;
    let pause = 5;
    while (true) {
      this.#check(options);
      try {
        await Deno.lstat(this.local);
        break;
      } catch { /* not yet */ }
      await this.#wait(Math.min(pause, Math.max(1, deadline - Date.now())), signal);
      pause = Math.min(pause * 2, 20);
    }
    let delay = 20;
    while (true) {
      this.#check(options);
      const seen = this.#stderr.length;
      let conn: Deno.UnixConn;
      try {
        conn = await Deno.connect({ transport: "unix", path: this.local });
      } catch (cause) {
        await this.#race(this.#changed(EXPLAIN_MS), { deadline: Infinity }).catch(() => {});
        if (this.#exited !== undefined) throw this.#exitError();
        throw new SshError(
          `Cannot connect to the local end of the ssh tunnel to ${this.where} ` +
            `(${this.local}): ${cause instanceof Error ? cause.message : cause}`,
          "forward",
          { address: this.where, cause },
        );
      }
      const head = new Uint8Array(4096);
      let n: number | null;
      try {
        n = await this.#race(conn.read(head), options, () => conn.close());
      } catch (err) {
        try {
          conn.close();
        } catch { /* closed */ }
        throw err;
      }
      if (n !== null) return new SshTransport(conn, this, head.slice(0, n));
      conn.close();
      // EOF before a single byte: ssh says why (or has died) in a moment.
      let line = openFailure(this.#stderr.slice(seen));
      const until = Math.min(deadline, Date.now() + EXPLAIN_MS);
      while (line === undefined && this.#exited === undefined && Date.now() < until) {
        await this.#changed(until - Date.now());
        line = openFailure(this.#stderr.slice(seen));
      }
      if (this.#exited !== undefined) throw this.#exitError();
      const error = line !== undefined
        ? await this.#remoteSocketError(line, options)
        : new SshError(
          `${this.where} closed the connection before sending anything; a QMP monitor ` +
            `greets at once: is ${this.address.path} QEMU's QMP socket?`,
          "remote-socket",
          { address: this.where },
        );
      const left = deadline - Date.now();
      if (!options.retry || left <= 0) {
        if (options.retry) {
          throw new TimeoutError(`Connecting to ${this.where}`, options.timeoutMs, {
            cause: error,
            hint: `the remote socket never opened (last: ${line ?? "closed at once"})`,
          });
        }
        throw error;
      }
      await this.#wait(Math.min(delay, left), signal);
      delay = Math.min(delay * 2, 200);
    }
  }

  /**
   * The error for a remote socket sshd could not open. OpenSSH says only "open
   * failed"; unless retrying, the host's SFTP subsystem is asked what is at the
   * path (ssh_probe.ts), within the deadline, to say which of the causes it is.
   */
  async #remoteSocketError(line: string, options: OpenOptions): Promise<SshError> {
    const path = this.address.path;
    const host = this.#host();
    const qemu = `-qmp unix:${path},server=on,wait=off`;
    const forwarding = "sshd allows forwarding to it (AllowStreamLocalForwarding; OpenSSH 9.2 " +
      "also needs AllowTcpForwarding)";
    const what = options.retry ? undefined : await describeRemotePath(
      this.#binary,
      this.#connArgs,
      this.address.hostname,
      path,
      Math.min(3000, options.deadline - Date.now()),
    );
    const make = (message: string) =>
      new SshError(message, "remote-socket", { address: this.where, sshMessage: line });
    if (what === "does not exist") {
      return make(
        `ssh reached ${host}, but the remote socket ${path} does not exist (${line}): ` +
          `is QEMU running there with ${qemu}?`,
      );
    }
    if (what === "is a socket") {
      return make(
        `ssh reached ${host}, but sshd could not connect to the socket ${path} (${line}): ` +
          `check that QEMU still listens on it (${qemu}), that the ssh user may open it, and ` +
          `that ${forwarding}`,
      );
    }
    if (what === "may not be looked at by the ssh user") {
      return make(
        `ssh reached ${host}, but the ssh user may not reach ${path} (permission denied; ` +
          `${line}): log in as a user that may open QEMU's socket`,
      );
    }
    if (what !== undefined) {
      return make(
        `ssh reached ${host}, but ${path} ${what}, not a socket (${line}): give the path of ` +
          `QEMU's QMP socket (${qemu})`,
      );
    }
    return make(
      `ssh reached ${host} but could not open the remote socket ${path} (${line}): check ` +
        `that QEMU runs there with ${qemu}, that the ssh user may open it, and that ${forwarding}`,
    );
  }

  /** Throws when ssh has exited, the deadline passed or the signal fired. */
  #check(options: OpenOptions): void {
    if (this.#exited !== undefined) throw this.#exitError();
    if (options.signal?.aborted) {
      throw new AbortError(`Connecting to ${this.where}`, { cause: options.signal.reason });
    }
    if (Date.now() >= options.deadline) throw this.#timeout(options);
  }

  #timeout(options: OpenOptions): TimeoutError {
    const said = lastLine(this.#stderr);
    const up = (() => {
      try {
        Deno.lstatSync(this.local);
        return true;
      } catch {
        return false;
      }
    })();
    return new TimeoutError(`Connecting to ${this.where}`, options.timeoutMs, {
      hint: up
        ? `ssh connected and the remote socket accepted, but sent nothing: QEMU greets at ` +
          `once unless another client holds the monitor (QMP serves one at a time) or ` +
          `${this.address.path} is not a QMP socket`
        : `ssh had not finished connecting to ${this.#host()} (name lookup, TCP connect or ` +
          `authentication still in progress)` + (said ? `; ssh said: ${said}` : ""),
    });
  }

  /** Waits `ms` unless ssh exits or the signal fires first (then returns early). */
  async #wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await this.#race(new Promise<void>((r) => (timer = setTimeout(r, ms))), {
      deadline: Infinity,
      signal,
    }).catch(() => {});
    clearTimeout(timer);
  }

  /**
   * Races `p` against ssh's exit, the deadline and the signal; `undo` runs when
   * `p` loses. Throws the exit's, the deadline's or the abort's error.
   */
  async #race<T>(
    p: Promise<T>,
    options: { deadline: number; signal?: AbortSignal; timeoutMs?: number; retry?: boolean },
    undo?: () => void,
  ): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const lost = new Promise<never>((_, reject) => {
      this.#status!.then(() => reject(this.#exitError()));
      if (Number.isFinite(options.deadline)) {
        timer = setTimeout(
          () => reject(this.#timeout(options as OpenOptions)),
          Math.max(0, options.deadline - Date.now()),
        );
      }
      onAbort = () =>
        reject(new AbortError(`Connecting to ${this.where}`, { cause: options.signal?.reason }));
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener("abort", onAbort, { once: true });
    });
    lost.catch(() => {});
    try {
      return await Promise.race([p, lost]);
    } catch (err) {
      undo?.();
      p.catch(() => {});
      throw err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort!);
    }
  }

  /**
   * Why an established tunnel broke: an {@link SshError} when ssh exited with
   * an error, else the I/O error itself (or `undefined` at a clean EOF: the
   * remote socket closed).
   */
  async explainLoss(err: unknown): Promise<unknown> {
    if (this.#exited === undefined) {
      await this.#race(this.#changed(LOSS_MS), { deadline: Infinity }).catch(() => {});
    }
    const status = this.#exited;
    if (status === undefined || status.code === 0) return err;
    const said = lastLine(this.#stderr);
    return new SshError(
      `the ssh tunnel to ${this.#host()} ended (` +
        (status.signal ? `ssh was killed by ${status.signal}` : `ssh exited with ${status.code}`) +
        (said ? `: ${said}` : "") + ")",
      "exited",
      { address: this.where, sshMessage: said, cause: err },
    );
  }

  #host(): string {
    const a = this.address;
    const host = a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname;
    return `${a.user !== undefined ? `${a.user}@` : ""}${host}${
      a.port !== undefined ? `:${a.port}` : ""
    }`;
  }

  /** The error for an ssh that exited before the tunnel was up. */
  #exitError(): SshError {
    return classify(this.#stderr, this.#exited!, this.#binary, this.#host(), this.where);
  }

  /** Ends ssh (TERM, then KILL), its process group and stderr pump; removes the dir. */
  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      const child = this.#child;
      if (child && this.#exited === undefined) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = await Promise.race([
          this.#status!.then(() => false),
          new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 1000))),
        ]);
        clearTimeout(timer);
        if (late) {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }
      }
      await this.#status;
      // stderr ends with ssh (its group is dead); do not wait forever for a stray holder.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#pump, new Promise((r) => (timer = setTimeout(r, 500)))]);
      clearTimeout(timer);
      await this.#reader?.cancel().catch(() => {});
      await this.#pump;
      live.delete(this);
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    })();
    return this.#disposing;
  }

  /** Synchronous last resort at process exit. */
  killNow(): void {
    const child = this.#child;
    if (child && this.#exited === undefined) {
      try {
        child.kill("SIGKILL"); // a child of ours: needs no --allow-run for Deno.kill
      } catch { /* gone */ }
      killProcessGroup(child.pid);
    }
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch { /* gone */ }
  }
}

function hookProcessExit(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  globalThis.addEventListener("unload", () => {
    for (const t of live) t.killNow();
  });
}

/** Refuses options that would break the tunnel; see {@link SshOptions.options}. */
function checkOptions(ssh: SshOptions, where: string): void {
  const bad = (why: string) =>
    new SshError(`Cannot use these ssh options for ${where}: ${why}`, "config", {
      address: where,
    });
  for (
    const [name, value] of [["configFile", ssh.configFile], ["identityFile", ssh.identityFile]]
  ) {
    if (value !== undefined && (typeof value !== "string" || value === "")) {
      throw bad(`${name} must be a non-empty path`);
    }
  }
  if (ssh.binary !== undefined && (typeof ssh.binary !== "string" || ssh.binary === "")) {
    throw bad("binary must be a non-empty program name or path");
  }
  const opts = ssh.options ?? [];
  if (!Array.isArray(opts) || opts.some((o) => typeof o !== "string")) {
    throw bad('options must be an array of strings, e.g. ["-o", "Port=2222"]');
  }
  for (let i = 0; i < opts.length; i++) {
    const arg = opts[i];
    if (!arg.startsWith("-") || arg === "-" || arg === "--") {
      throw bad(
        `${JSON.stringify(arg)} is not an option (each one starts with "-"; give ` +
          `values after their flag, e.g. "-o", "Port=2222")`,
      );
    }
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j];
      if (REFUSED_FLAGS[flag]) throw bad(REFUSED_FLAGS[flag]);
      if (VALUE_FLAGS.has(flag)) {
        if (j === arg.length - 1) {
          if (i + 1 >= opts.length) throw bad(`-${flag} needs a value`);
          i++;
        }
        break;
      }
    }
  }
}

function missingBinary(binary: string, where: string, cause: unknown): SshError {
  if (cause instanceof Deno.errors.NotFound) {
    return new SshError(
      `Cannot reach ${where}: the ssh program "${binary}" was not found. Install the ` +
        `OpenSSH client (Debian: apt-get install openssh-client) or name it in the ssh ` +
        `options' binary`,
      "ssh-missing",
      { address: where, cause },
    );
  }
  const text = cause instanceof Error ? cause.message : String(cause);
  return new SshError(
    `Cannot reach ${where}: cannot run "${binary}": ${text}` +
      (cause instanceof Deno.errors.NotCapable || cause instanceof Deno.errors.PermissionDenied
        ? ` (allow it: --allow-run=${binary.slice(binary.lastIndexOf("/") + 1)} or --allow-run)`
        : ""),
    "ssh-missing",
    { address: where, cause },
  );
}

/** The "channel N: open failed: ..." line of a forwarded connection that failed. */
function openFailure(text: string): string | undefined {
  const m = /^channel \d+: open failed: (.*)$/m.exec(text.replace(/\r/g, ""));
  return m ? `sshd: ${m[1].trim()}` : undefined;
}

function lines(text: string): string[] {
  return text.replace(/\r/g, "").split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

function lastLine(text: string): string | undefined {
  const all = lines(text).filter((l) => !/^@+$/.test(l));
  return all.at(-1);
}

/** Turns ssh's exit (status and stderr) into a specific {@link SshError}. */
function classify(
  stderr: string,
  status: Deno.CommandStatus,
  binary: string,
  host: string,
  where: string,
): SshError {
  const all = lines(stderr);
  const find = (re: RegExp) => all.find((l) => re.test(l));
  const make = (failure: SshFailure, message: string, said?: string) =>
    new SshError(message, failure, { address: where, sshMessage: said });
  const exec = find(/^setpriv: failed to execute|^setpriv: .*No such file/);
  if (exec || status.code === 127) {
    return make(
      "ssh-missing",
      `Cannot reach ${where}: the ssh program "${binary}" could not be run` +
        (exec ? ` (${exec})` : "") +
        `. Install the OpenSSH client (Debian: apt-get install openssh-client) or name it ` +
        `in the ssh options' binary`,
      exec,
    );
  }
  const hostKey = find(/Host key verification failed/);
  if (hostKey) {
    const changed = find(/REMOTE HOST IDENTIFICATION HAS CHANGED|has changed and you have/);
    if (changed) {
      const remove = find(/^ssh-keygen .* -R /);
      return make(
        "host-key",
        `The host key of ${host} has CHANGED since it was recorded in known_hosts ` +
          `(Host key verification failed): this can be an attack, or the host was ` +
          `reinstalled. Check with its administrator; if the new key is right, remove the ` +
          `old one (${remove ?? `ssh-keygen -R ${host}`}) and connect once with ssh to record it`,
        changed,
      );
    }
    const unknown = find(/host key is known for/);
    return make(
      "host-key",
      `ssh does not know the host key of ${host} (Host key verification failed: ` +
        `${unknown ?? "it is not in known_hosts"}), and qmpkit never answers ssh's prompt. ` +
        `Connect once with ssh yourself to check and record it, or trust a new host on ` +
        `first use with the ssh option -o StrictHostKeyChecking=accept-new`,
      unknown ?? hostKey,
    );
  }
  const denied = find(/Permission denied \(|Too many authentication failures/);
  if (denied) {
    const keyTrouble = find(/^no such identity: |^Load key .*:|bad permissions/);
    return make(
      "auth",
      `ssh authentication to ${host} was refused (${
        denied.replace(/^\S+@\S+: /, "").replace(/\.$/, "")
      }). ` +
        `ssh runs with BatchMode=yes (no password or passphrase prompts): use a key the ` +
        `remote user authorizes, from ssh-agent, your ssh config or the ssh options' ` +
        `identityFile` + (keyTrouble ? ` (ssh: ${keyTrouble})` : ""),
      denied,
    );
  }
  const resolve = find(/Could not resolve hostname/);
  if (resolve) {
    return make(
      "unreachable",
      `Cannot reach ${host}: ${resolve.replace(/^ssh: /, "")}. Check the host name ` +
        `(or its Host entry in your ssh config)`,
      resolve,
    );
  }
  const tcp = find(
    /connect to host .* port \d+: |Connection timed out|Connection refused|No route to host|Network is unreachable|Connection reset|Connection closed by|kex_exchange_identification|banner exchange/,
  );
  if (tcp) {
    return make(
      "unreachable",
      `Cannot reach ${host} with ssh: ${tcp.replace(/^ssh: /, "")}. Check the host and ` +
        `port, that sshd runs there, and that nothing blocks the way`,
      tcp,
    );
  }
  const forward = find(/unix_listener|Could not request local forwarding|cannot listen to/);
  if (forward) {
    return make(
      "forward",
      `ssh could not set up the local end of the tunnel to ${where}: ${forward}`,
      forward,
    );
  }
  const config = find(
    /Bad configuration option|[Bb]ad .* specification|Can't open user config file|line \d+: |Unsupported option|usage: ssh|unknown option|illegal option|Invalid/,
  );
  if (config) {
    return make(
      "config",
      `ssh refused its configuration or options for ${where}: ${config}`,
      config,
    );
  }
  const said = lastLine(stderr);
  return make(
    "exited",
    `ssh to ${host} exited with status ${status.code}${
      status.signal ? ` (${status.signal})` : ""
    } before the tunnel to ${where} was up` + (said ? `: ${said}` : ""),
    said,
  );
}
