/**
 * Test helper: spawns a throwaway `qemu-system-x86_64` with a QMP monitor on a
 * fresh unix socket (in a private 0700 temp dir) or a free TCP port on
 * 127.0.0.1, and cleans everything up on `await using`.
 *
 * Not the product's launcher: deliberately small, for tests and benchmarks.
 *
 * @module
 */
import { resolveAccel } from "../../lib/accel.ts";
import { connect } from "../../lib/client.ts";

/** Options of {@link startQemu}. */
export interface StartQemuOptions {
  /** `-machine` type: `none` (no guest at all, fastest) or `pc`. */
  machine: "none" | "pc";
  /** Start with `-S` (vCPUs stopped, status `prelaunch`). */
  paused?: boolean;
  /** Put the monitor on `tcp:127.0.0.1:<free port>` instead of a unix socket. */
  tcp?: boolean;
  /** More QEMU arguments, e.g. `["-device", "qemu-xhci"]`. */
  extraArgs?: string[];
  /**
   * Called with the monitor address before QEMU is spawned (the socket does
   * not exist yet); awaited. For tests that must act before QEMU listens.
   */
  beforeSpawn?: (address: string) => void | Promise<void>;
  /** Wait until the monitor accepts connections (probed with a connect + close; default `true`). */
  waitListening?: boolean;
  /** How long to wait for the socket to appear (default 10 s). */
  startTimeoutMs?: number;
}

/** A running QEMU; dispose it to kill it and remove its files. */
export interface RunningQemu extends AsyncDisposable {
  /** QMP address for `connect()`: `unix:/tmp/.../qmp.sock` or `tcp:127.0.0.1:PORT`. */
  address: string;
  /** The unix socket path (also set for TCP, where it is never created). */
  socketPath: string;
  /** The TCP port, for `tcp: true`. */
  port?: number;
  /** The QEMU process. */
  child: Deno.ChildProcess;
  /** Private temp dir (mode 0700) holding the socket. */
  tmpdir: string;
  /** The full argument list QEMU was started with. */
  args: string[];
  /** Resolves with QEMU's exit status once it has exited. */
  status: Promise<Deno.CommandStatus>;
  /** What QEMU printed on stderr so far (for diagnostics). */
  stderr(): string;
  /** Kills QEMU (SIGTERM, then SIGKILL after `graceMs`) and waits for it; idempotent. */
  kill(signal?: Deno.Signal, graceMs?: number): Promise<Deno.CommandStatus>;
}

export const QEMU_BINARY = "qemu-system-x86_64";

/**
 * True when the launcher would pick KVM (`resolveAccel("auto")`: `QMPKIT_ACCEL`,
 * else the library's cached KVM probe), so helpers and `launch()` agree whatever
 * Deno's permission flags are.
 */
export async function kvmAvailable(): Promise<boolean> {
  return (await resolveAccel("auto")).accel === "kvm";
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Spawns QEMU with a QMP monitor; see {@link StartQemuOptions}. */
export async function startQemu(options: StartQemuOptions): Promise<RunningQemu> {
  const tmpdir = await Deno.makeTempDir({ prefix: "qmpkit-test-" });
  await Deno.chmod(tmpdir, 0o700);
  const socketPath = `${tmpdir}/qmp.sock`;
  const port = options.tcp ? freePort() : undefined;
  const address = port !== undefined ? `tcp:127.0.0.1:${port}` : `unix:${socketPath}`;
  const qmp = port !== undefined
    ? `tcp:127.0.0.1:${port},server=on,wait=off`
    : `unix:${socketPath},server=on,wait=off`;
  const args = ["-nodefaults", "-display", "none", "-machine", options.machine];
  if (options.machine !== "none") {
    args.push("-accel", (await kvmAvailable()) ? "kvm" : "tcg", "-m", "64");
  }
  if (options.paused) args.push("-S");
  args.push("-qmp", qmp, ...(options.extraArgs ?? []));

  try {
    await options.beforeSpawn?.(address);
  } catch (err) {
    await Deno.remove(tmpdir, { recursive: true }).catch(() => {});
    throw err;
  }

  const child = new Deno.Command(QEMU_BINARY, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderrText = "";
  const drain = async (stream: ReadableStream<Uint8Array>, keep: boolean) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      if (keep && stderrText.length < 64 * 1024) stderrText += decoder.decode(chunk);
    }
  };
  const drained = Promise.all([drain(child.stdout, false), drain(child.stderr, true)]).catch(
    () => {},
  );
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  let killing: Promise<Deno.CommandStatus> | undefined;
  const kill = (signal: Deno.Signal = "SIGTERM", graceMs = 2000) => {
    killing ??= (async () => {
      if (!exited) {
        try {
          child.kill("SIGCONT"); // in case a test left it SIGSTOPped
          child.kill(signal);
        } catch { /* already gone */ }
        if (signal !== "SIGKILL") {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const timedOut = await Promise.race([
            status.then(() => false),
            new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
          ]);
          clearTimeout(timer);
          if (timedOut) {
            try {
              child.kill("SIGKILL");
            } catch { /* already gone */ }
          }
        }
      }
      return await status;
    })();
    return killing;
  };

  const qemu: RunningQemu = {
    address,
    socketPath,
    port,
    child,
    tmpdir,
    args,
    status,
    stderr: () => stderrText,
    kill,
    async [Symbol.asyncDispose]() {
      await kill();
      await drained;
      await Deno.remove(tmpdir, { recursive: true }).catch(() => {});
    },
  };

  if (options.waitListening !== false) {
    try {
      await waitListening(qemu, options.startTimeoutMs ?? 10_000, () => exited);
    } catch (err) {
      await qemu[Symbol.asyncDispose]();
      throw new Error(`${(err as Error).message}\nQEMU ${args.join(" ")}\nstderr: ${stderrText}`);
    }
  }
  return qemu;
}

/** Polls until QEMU's monitor listens. */
async function waitListening(
  qemu: RunningQemu,
  timeoutMs: number,
  exited: () => boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (exited()) throw new Error(`QEMU exited before its monitor was listening`);
    if (await accepting(qemu)) return;
    if (Date.now() > deadline) {
      throw new Error(`QEMU's monitor ${qemu.address} was not listening after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * True once the monitor accepts connections. The socket file alone is not
 * enough (QEMU binds, then listens: connecting in between is refused). The
 * probe connection is closed at once; QEMU greets it, sees EOF and serves the
 * next client. (Reading /proc/net/tcp would avoid it but needs --allow-all.)
 */
async function accepting(qemu: RunningQemu): Promise<boolean> {
  try {
    const conn = qemu.port === undefined
      ? await Deno.connect({ transport: "unix", path: qemu.socketPath })
      : await Deno.connect({ hostname: "127.0.0.1", port: qemu.port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** Sleeps `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Awaits `promise`, failing with an Error naming `what` if it takes longer
 * than `ms`. The timer is always cleared, so sanitizers stay happy.
 */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Like {@link startQemu}, then waits until a QMP client gets a greeting. For
 * clients run without retry (the CLI as a subprocess): right after startQemu's
 * probe hangs up, QEMU may still refuse the next unix connection for a moment.
 */
export async function startQemuForClients(options: StartQemuOptions): Promise<RunningQemu> {
  const qemu = await startQemu(options);
  try {
    const probe = await connect(qemu.address, { retry: true, timeout: "10s", negotiate: false });
    await probe.close();
  } catch (err) {
    await qemu[Symbol.asyncDispose]();
    throw err;
  }
  return qemu;
}
