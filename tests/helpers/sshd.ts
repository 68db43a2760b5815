/**
 * Test helper: a throwaway OpenSSH server on 127.0.0.1 (a free port), with a
 * fresh host key and user key in a private temp dir, started and stopped by
 * the test. Nothing of the system's ssh configuration is read or written:
 * sshd gets its own `sshd_config` (`-f`), the client its own `ssh_config`
 * (`-F`) with its own known_hosts and key. The one system change is creating
 * sshd's privilege separation dir `/run/sshd` when running as root.
 *
 * Needs Debian's `openssh-server` (scripts/setup.sh installs it) and
 * `ssh-keygen`. Reusable for other ssh-based transports (e.g. `qemu+ssh://`).
 *
 * @module
 */
import { freePort } from "./qemu.ts";

/** Where Debian installs sshd. */
export const SSHD_BINARY = "/usr/sbin/sshd";

/** Options of {@link startSshd}. */
export interface StartSshdOptions {
  /** `AllowStreamLocalForwarding` (forwarding to unix sockets; default `true`). */
  allowStreamLocalForwarding?: boolean;
  /** Serve the SFTP subsystem (`internal-sftp`; default `true`). */
  sftp?: boolean;
  /** More `sshd_config` lines. */
  extraConfig?: string[];
  /** How long sshd may take to listen (default 10 s). */
  startTimeoutMs?: number;
}

/** Options of {@link Sshd.clientConfig}. */
export interface ClientConfigOptions {
  /** The known_hosts file (default: one that knows this server's host key). */
  knownHosts?: string;
  /** The private key (default: the authorized user key). */
  identityFile?: string;
  /** More lines, inside `Host *` (indent them) or as their own `Host` blocks. */
  extra?: string[];
  /** File name inside the temp dir (default a fresh `ssh_config-N`). */
  name?: string;
}

/** A running sshd; dispose it (`await using`) to stop it and remove its files. */
export interface Sshd extends AsyncDisposable {
  /** The port on 127.0.0.1. */
  port: number;
  /** The login name (the current user). */
  user: string;
  /** Private temp dir (0700) with keys, configs and whatever the test puts there. */
  dir: string;
  /** Default client config: knows the host key, uses the authorized key. */
  configFile: string;
  /** The known_hosts file that knows this server's host key. */
  knownHosts: string;
  /** The authorized user key (private key path; never printed). */
  userKey: string;
  /** `ssh://USER@127.0.0.1:PORT/PATH` for a remote socket path. */
  url(path: string): string;
  /** Writes another client config (e.g. unknown host key, wrong user key). */
  clientConfig(options?: ClientConfigOptions): Promise<string>;
  /** Makes a fresh key pair in the temp dir that the server does NOT authorize. */
  newKey(name: string): Promise<string>;
  /** What sshd logged so far (its `-e` stderr). */
  log(): string;
  /** The sshd process. */
  child: Deno.ChildProcess;
}

let configCounter = 0;

/** True when sshd and ssh-keygen are installed. */
export function sshdInstalled(): boolean {
  for (const p of [SSHD_BINARY, "/usr/bin/ssh-keygen", "/usr/bin/ssh"]) {
    try {
      Deno.statSync(p);
    } catch {
      return false;
    }
  }
  return true;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function keygen(path: string): Promise<void> {
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "qmpkit-test", "-f", path]);
}

/** Starts sshd on 127.0.0.1; see {@link StartSshdOptions}. */
export async function startSshd(options: StartSshdOptions = {}): Promise<Sshd> {
  if (!sshdInstalled()) {
    throw new Error(
      `${SSHD_BINARY} is missing: install openssh-server (scripts/setup.sh does)`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-sshd-" });
  try {
    await Deno.chmod(dir, 0o700);
    // As root, sshd insists on its privilege separation dir (no --allow-sys: ask id).
    if ((await run("id", ["-u"])).trim() === "0") {
      await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    }
    const user = (await run("id", ["-un"])).trim();
    const hostKey = `${dir}/host_key`;
    const userKey = `${dir}/user_key`;
    await Promise.all([keygen(hostKey), keygen(userKey)]);
    await Deno.copyFile(`${userKey}.pub`, `${dir}/authorized_keys`);
    const hostPub = (await Deno.readTextFile(`${hostKey}.pub`)).trim().split(" ")
      .slice(0, 2).join(" ");
    for (let attempt = 1;; attempt++) {
      try {
        return await spawn(dir, user, hostKey, userKey, hostPub, options);
      } catch (err) {
        // Another process took the free port between the probe and sshd's bind.
        if (attempt < 3 && /Address already in use|Cannot bind/.test(String(err))) continue;
        throw err;
      }
    }
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
}

async function spawn(
  dir: string,
  user: string,
  hostKey: string,
  userKey: string,
  hostPub: string,
  options: StartSshdOptions,
): Promise<Sshd> {
  const port = freePort();
  const sshdConfig = `${dir}/sshd_config`;
  await Deno.writeTextFile(
    sshdConfig,
    [
      "ListenAddress 127.0.0.1",
      `Port ${port}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PidFile ${dir}/sshd.pid`,
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      `AllowStreamLocalForwarding ${options.allowStreamLocalForwarding === false ? "no" : "yes"}`,
      "X11Forwarding no",
      "PermitTTY no",
      "MaxStartups 100:30:200",
      ...(options.sftp === false ? [] : ["Subsystem sftp internal-sftp"]),
      "LogLevel INFO",
      ...(options.extraConfig ?? []),
      "",
    ].join("\n"),
  );
  const knownHosts = `${dir}/known_hosts`;
  await Deno.writeTextFile(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);

  const child = new Deno.Command(SSHD_BINARY, {
    args: ["-D", "-e", "-f", sshdConfig],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const { promise: ready, resolve: listening } = Promise.withResolvers<void>();
  const reader = child.stderr.getReader();
  const pump = (async () => {
    const decoder = new TextDecoder();
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      if (log.length < 256 * 1024) log += decoder.decode(value, { stream: true });
      if (/Server listening on 127\.0\.0\.1 port/.test(log)) listening();
    }
  })().catch(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = await Promise.race([
          status.then(() => false),
          new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 2000))),
        ]);
        clearTimeout(timer);
        if (late) {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }
      }
      await status;
      // A session process that outlives the listener (its client still connected)
      // holds stderr open: stop reading after a moment rather than wait for it.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([pump, new Promise((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
      await reader.cancel().catch(() => {});
      await pump;
    })();

  const timeoutMs = options.startTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    ready.then(() => "ready"),
    status.then(() => "exited"),
    new Promise<string>((r) => (timer = setTimeout(() => r("timeout"), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    await stop();
    throw new Error(`sshd did not start (${outcome}): ${log.trim()}`);
  }

  const clientConfig = async (o: ClientConfigOptions = {}): Promise<string> => {
    const path = `${dir}/${o.name ?? `ssh_config-${++configCounter}`}`;
    await Deno.writeTextFile(
      path,
      [
        "Host *",
        `  UserKnownHostsFile ${o.knownHosts ?? knownHosts}`,
        "  GlobalKnownHostsFile /dev/null",
        `  IdentityFile ${o.identityFile ?? userKey}`,
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        "  UpdateHostKeys no",
        ...(o.extra ?? []),
        "",
      ].join("\n"),
    );
    return path;
  };
  const configFile = await clientConfig({ name: "ssh_config" });

  return {
    port,
    user,
    dir,
    configFile,
    knownHosts,
    userKey,
    child,
    url: (path) => `ssh://${user}@127.0.0.1:${port}${path}`,
    clientConfig,
    async newKey(name) {
      const path = `${dir}/${name}`;
      await keygen(path);
      return path;
    },
    log: () => log,
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A live process: pid and command line. */
export interface ProcessInfo {
  /** Process id. */
  pid: number;
  /** Its command line, arguments joined by spaces. */
  args: string;
}

/**
 * Live (not zombie) processes whose command line contains `marker` (e.g. a
 * temp dir only this test's ssh uses), from `ps` (Deno reads /proc only with
 * --allow-all).
 */
export async function processesWith(marker: string): Promise<ProcessInfo[]> {
  const out = await run("ps", ["-ww", "-eo", "pid=,stat=,args="]);
  const found: ProcessInfo[] = [];
  for (const line of out.split("\n")) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m || m[2].startsWith("Z") || !m[3].includes(marker)) continue;
    if (m[3].startsWith("ps -ww")) continue;
    found.push({ pid: Number(m[1]), args: m[3] });
  }
  return found;
}
