/**
 * The real qemu-ga, run on the HOST as a subprocess listening on a private unix socket: fast
 * helper tests without a VM. Everything that would act on the host machine (shutdown, suspend,
 * fsfreeze, fstrim, setting time, users, vcpus, memory, ssh keys) is blocked with `-b`, and
 * {@link startHostAgent} verifies the block through `guest-info` before handing the agent out.
 *
 * @module
 */
import { connectAgent } from "../../lib/agent/client.ts";

/** Where Debian installs qemu-ga. */
export const QEMU_GA = "/usr/sbin/qemu-ga";

/** Commands that must never run against the host. */
export const HOST_BLOCKED = [
  "guest-shutdown",
  "guest-suspend-disk",
  "guest-suspend-ram",
  "guest-suspend-hybrid",
  "guest-fsfreeze-freeze",
  "guest-fsfreeze-freeze-list",
  "guest-fsfreeze-thaw",
  "guest-fstrim",
  "guest-set-time",
  "guest-set-user-password",
  "guest-set-vcpus",
  "guest-set-memory-blocks",
  "guest-ssh-add-authorized-keys",
  "guest-ssh-remove-authorized-keys",
];

/** True when qemu-ga is installed (setup.sh installs qemu-guest-agent). */
export function hostAgentAvailable(): boolean {
  try {
    return Deno.statSync(QEMU_GA).isFile;
  } catch {
    return false;
  }
}

/** A running host qemu-ga. */
export interface HostAgent extends AsyncDisposable {
  /** `unix:<dir>/qga.sock`. */
  address: string;
  /** The socket path. */
  path: string;
  /** A private temp dir (state dir; tests may put files here). */
  dir: string;
  /** qemu-ga's pid. */
  pid: number;
  /** Kills qemu-ga now (SIGKILL) and waits for it. */
  kill(): Promise<void>;
}

/** Starts qemu-ga on a private socket and checks that the dangerous commands are blocked. */
export async function startHostAgent(): Promise<HostAgent> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-qga-" });
  const path = `${dir}/qga.sock`;
  const child = new Deno.Command(QEMU_GA, {
    args: [
      "-m",
      "unix-listen",
      "-p",
      path,
      "-t",
      dir,
      "-f",
      `${dir}/qemu-ga.pid`,
      "-l",
      `${dir}/qemu-ga.log`,
      "-b",
      HOST_BLOCKED.join(","),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const kill = async () => {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await status;
  };
  const dispose = async () => {
    await kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const agent = await connectAgent(`unix:${path}`, { timeout: "10s", retry: true });
    try {
      const info = await agent.info();
      const enabled = info.supported_commands.filter((c) =>
        HOST_BLOCKED.includes(c.name) && c.enabled
      );
      if (enabled.length) {
        throw new Error(`host qemu-ga did not block ${enabled.map((c) => c.name).join(", ")}`);
      }
    } finally {
      await agent.close();
    }
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    address: `unix:${path}`,
    path,
    dir,
    pid: child.pid,
    kill,
    [Symbol.asyncDispose]: dispose,
  };
}
