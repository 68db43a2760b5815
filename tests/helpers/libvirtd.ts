/**
 * A local libvirtd for tests: started (virtlogd, then libvirtd, as daemons) when
 * not running and stopped again by whoever started it; transient TCG domains
 * with unique names, destroyed by their owner.
 *
 * @module
 */
import { findTinyGuest, GuestNotBuiltError } from "../../lib/guest.ts";

/**
 * Registers a first test that loads libvirt (sanitizers off): the library handles and
 * libvirt's callbacks (error handler, event loop wakeup, event dispatch; all unref'd) stay
 * for the life of the process, so the test that first loads them cannot close them.
 */
export function loadLibvirtFirst(): void {
  Deno.test({
    name: "libvirt: load the library (held for the life of the process)",
    ignore: libvirtSkipReason() !== undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const { LibvirtConnection } = await import("../../lib/libvirt_ffi.ts");
      // Any call loads libvirt; an unreachable URI fails at once without a daemon.
      await LibvirtConnection.open({
        uri: "qemu:///system?socket=/nonexistent/libvirt-sock",
        domain: "none",
      }).then((c) => c.close(), () => undefined);
    },
  });
}

/** libvirtd's read-write socket. */
export const LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock";
const URI = "qemu:///system";

/** True when the libvirt daemon and client are installed. */
export function libvirtInstalled(): boolean {
  for (const f of ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh"]) {
    try {
      Deno.statSync(f);
    } catch {
      return false;
    }
  }
  try {
    Deno.statSync("/usr/lib/x86_64-linux-gnu/libvirt-qemu.so.0");
  } catch {
    return false;
  }
  return true;
}

/** Skip reason for `Deno.test({ ignore })` when libvirt is missing or we are not root. */
export function libvirtSkipReason(): string | undefined {
  if (!libvirtInstalled()) return "libvirt not installed (scripts/setup.sh installs it)";
  const uid = new TextDecoder().decode(
    new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync().stdout,
  ).trim();
  if (uid !== "0") return "needs root to run libvirtd";
  return undefined;
}

async function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<Deno.CommandOutput> {
  return await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
}

/** Runs virsh against qemu:///system; throws with its stderr on failure. */
export async function virsh(...args: string[]): Promise<string> {
  const out = await run("virsh", ["-c", URI, ...args]);
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`virsh ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return text;
}

/** True when something accepts connections on {@link LIBVIRT_SOCKET} now (synchronous probe). */
export function libvirtdAnswers(): boolean {
  const out = new Deno.Command("sh", {
    args: ["-c", `[ -S ${LIBVIRT_SOCKET} ] && virsh -c qemu:///system version >/dev/null 2>&1`],
  }).outputSync();
  return out.success;
}

async function socketAnswers(): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path: LIBVIRT_SOCKET });
    c.close();
    return true;
  } catch {
    return false;
  }
}

async function pidAlive(pidFile: string): Promise<number | undefined> {
  try {
    const pid = Number((await Deno.readTextFile(pidFile)).trim());
    return pid && await running(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True while `pid` exists and is not a zombie (`ps`: Deno allows /proc/PID only with -A). */
async function running(pid: number): Promise<boolean> {
  const out = await run("ps", ["-o", "stat=", "-p", String(pid)], 5_000);
  const stat = new TextDecoder().decode(out.stdout).trim();
  return out.success && stat !== "" && !stat.startsWith("Z");
}

let users = 0;
let started: { virtlogd: boolean; libvirtd: boolean } | undefined;

/**
 * Makes sure libvirtd answers on {@link LIBVIRT_SOCKET}, starting virtlogd and
 * libvirtd when they are not running (bounded: 20 s). Pair with {@link releaseLibvirtd}.
 */
export async function ensureLibvirtd(): Promise<void> {
  users++;
  if (await socketAnswers()) {
    started ??= { virtlogd: false, libvirtd: false };
    return;
  }
  const virtlogd = !(await pidAlive("/run/virtlogd.pid"));
  if (virtlogd) await run("virtlogd", ["-d"]);
  const libvirtd = !(await pidAlive("/run/libvirtd.pid"));
  if (libvirtd) await run("libvirtd", ["-d"]);
  started = { virtlogd, libvirtd };
  const deadline = Date.now() + 20_000;
  // The socket opens before libvirtd writes its pid file: wait for both (to stop it later).
  const up = async () =>
    await socketAnswers() && (!libvirtd || await pidAlive("/run/libvirtd.pid") !== undefined) &&
    (!virtlogd || await pidAlive("/run/virtlogd.pid") !== undefined);
  while (!(await up())) {
    if (Date.now() > deadline) {
      await releaseLibvirtd();
      throw new Error(`libvirtd did not open ${LIBVIRT_SOCKET} within 20 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** True when {@link ensureLibvirtd} started libvirtd itself (tests may then kill it). */
export function libvirtdStartedHere(): boolean {
  return started?.libvirtd === true;
}

/** SIGKILLs the libvirtd this helper started (its domains' QEMUs keep running). */
export async function killLibvirtd(): Promise<void> {
  if (!libvirtdStartedHere()) throw new Error("libvirtd was not started by this helper");
  const pid = await pidAlive("/run/libvirtd.pid");
  if (pid !== undefined) Deno.kill(pid, "SIGKILL");
}

/** Stops the daemons {@link ensureLibvirtd} started, when its last user releases them. */
export async function releaseLibvirtd(): Promise<void> {
  users--;
  if (users > 0 || !started) return;
  const s = started;
  started = undefined;
  for (const [name, mine] of [["libvirtd", s.libvirtd], ["virtlogd", s.virtlogd]] as const) {
    if (!mine) continue;
    const pid = await pidAlive(`/run/${name}.pid`);
    if (pid === undefined) continue;
    // A daemon still starting up may miss the first SIGTERM: repeat it, then SIGKILL.
    const deadline = Date.now() + 10_000;
    let lastTerm = 0;
    while (await running(pid) && Date.now() < deadline) {
      if (Date.now() - lastTerm > 1000) {
        Deno.kill(pid, "SIGTERM");
        lastTerm = Date.now();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (await running(pid)) Deno.kill(pid, "SIGKILL");
  }
}

/** A unique domain name for a test. */
export function uniqueName(prefix = "qmpkit-test"): string {
  return `${prefix}-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Options of {@link domainXml}. */
export interface DomainXmlOptions {
  /** Domain name (default: unique). */
  name?: string;
  /** Memory in MiB (default 64; 256 with the tiny guest). */
  memoryMiB?: number;
  /** Boot this kernel and initramfs (with `append`). */
  kernel?: { kernel: string; initrd: string; append: string };
  /** Add the guest agent channel (`org.qemu.guest_agent.0`). */
  agent?: boolean;
  /** Extra QEMU arguments (`<qemu:commandline>`), e.g. a second `-qmp` monitor. */
  qemuArgs?: string[];
}

/** A minimal TCG domain: no disks; optionally a direct kernel boot and an agent channel. */
export function domainXml(options: DomainXmlOptions = {}): string {
  const name = options.name ?? uniqueName();
  const mem = options.memoryMiB ?? (options.kernel ? 256 : 64);
  const boot = options.kernel
    ? `<kernel>${options.kernel.kernel}</kernel><initrd>${options.kernel.initrd}</initrd>` +
      `<cmdline>${options.kernel.append}</cmdline>`
    : "";
  const agent = options.agent
    ? "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    : "";
  const extra = options.qemuArgs?.length
    ? `<qemu:commandline>${
      options.qemuArgs.map((a) => `<qemu:arg value='${a}'/>`).join("")
    }</qemu:commandline>`
    : "";
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>` +
    `<name>${name}</name><memory unit='MiB'>${mem}</memory>` +
    `<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>${boot}</os>` +
    // ACPI: without it libvirt turns it off, and the guest cannot power itself off.
    `<features><acpi/></features>` +
    `<on_poweroff>destroy</on_poweroff>` +
    `<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>${agent}` +
    `<serial type='pty'/><memballoon model='none'/></devices>${extra}</domain>`;
}

/** A transient domain started for a test; `destroy()` (or `await using`) removes it. */
export interface TestDomain extends AsyncDisposable {
  /** Its name. */
  name: string;
  /** Stops it at once (`virsh destroy`); a transient domain is then gone. Idempotent. */
  destroy(): Promise<void>;
}

/** Starts a transient domain from {@link domainXml} options (`virsh create`). */
export async function createDomain(options: DomainXmlOptions = {}): Promise<TestDomain> {
  const name = options.name ?? uniqueName();
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-libvirt-" });
  await Deno.chmod(dir, 0o755); // QEMU may run as libvirt-qemu: it must read the kernel
  const file = `${dir}/domain.xml`;
  await Deno.writeTextFile(file, domainXml({ ...options, name }));
  let destroyed = false;
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await virsh("destroy", name).catch(() => undefined);
    await Deno.remove(dir, { recursive: true }).catch(() => undefined);
  };
  try {
    await virsh("create", file);
  } catch (err) {
    await destroy();
    throw err;
  }
  return { name, destroy, [Symbol.asyncDispose]: destroy };
}

/**
 * The tiny guest's kernel and initramfs copied to a world-readable temp dir (libvirt's QEMU
 * may run as libvirt-qemu, and relabels the files it boots), or undefined when not built.
 */
export async function tinyGuestCopy(): Promise<
  { kernel: string; initrd: string; append: string; agent: boolean; dir: string } | undefined
> {
  let guest;
  try {
    guest = await findTinyGuest();
  } catch (err) {
    if (err instanceof GuestNotBuiltError) return undefined;
    throw err;
  }
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-libvirt-guest-" });
  await Deno.chmod(dir, 0o755);
  const kernel = `${dir}/vmlinuz`;
  const initrd = `${dir}/initramfs.cpio.gz`;
  await Deno.copyFile(guest.kernel, kernel);
  await Deno.copyFile(guest.initrd, initrd);
  await Deno.chmod(kernel, 0o644);
  await Deno.chmod(initrd, 0o644);
  return { kernel, initrd, append: guest.append, agent: guest.agent, dir };
}
