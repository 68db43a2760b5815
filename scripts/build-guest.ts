/**
 * Builds the tiny Linux test guest used by qmpkit's lifecycle tests and demos, from
 * Debian packages, into the per-machine cache (see `guestCacheDir()` in lib/guest.ts):
 *
 * - `vmlinuz`: the kernel from `linux-image-cloud-amd64` (falls back to `linux-image-amd64`),
 *   fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed);
 * - `initramfs.cpio.gz`: a newc cpio (written here, gzip-compressed) holding a static busybox
 *   (`busybox-static`), the few kernel modules the guest needs and an `/init` script that
 *   prints the ready marker on ttyS0, runs a shell on the serial console and powers off
 *   when the ACPI power button is pressed (QMP `system_powerdown`);
 * - the QEMU guest agent: the host's `/usr/sbin/qemu-ga` (Debian `qemu-guest-agent`, which must
 *   be installed) with the shared libraries `ldd` resolves for it and the dynamic loader, started
 *   at boot on the virtio-serial port named `org.qemu.guest_agent.0` when the VM has one
 *   (`launch({ agent: true })`) and restarted if it dies; without the package the guest is
 *   built without an agent (with a warning);
 * - `guest.json`: the manifest.
 *
 * Usage:
 *   deno run --allow-read --allow-write --allow-run --allow-env scripts/build-guest.ts [--force] [--quiet]
 *
 * The build happens in a staging directory next to the cache and is renamed into place,
 * so an interrupted build never leaves a half-written cache.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { concatBytes } from "../lib/bytes.ts";
import { guestCacheDir } from "../lib/guest.ts";

/** Bump whenever the output changes (init script, modules, layout, ...) to force rebuilds. */
const RECIPE_VERSION = 2;
const READY_MARKER = "QMPKIT-GUEST-READY";
const POWEROFF_MARKER = "QMPKIT-GUEST-POWEROFF";
const APPEND = "console=ttyS0 quiet panic=-1";
const QEMU_ARGS = [
  "-M",
  "pc",
  "-accel",
  "tcg",
  "-m",
  "128",
  "-nodefaults",
  "-no-user-config",
  "-display",
  "none",
  "-serial",
  "stdio",
  "-no-reboot",
];
const KERNEL_PACKAGES = ["linux-image-cloud-amd64", "linux-image-amd64"];
const BUSYBOX_PACKAGE = "busybox-static";
const AGENT_PACKAGE = "qemu-guest-agent";
const AGENT_BINARY = "/usr/sbin/qemu-ga";
/** The virtio-serial port name qemu-ga listens on (QEMU's and libvirt's convention). */
const AGENT_PORT = "org.qemu.guest_agent.0";
/** Modules the agent cannot work without (virtio-serial over PCI). */
const AGENT_MODULES = ["virtio_pci", "virtio_console"];
/** Kernel options the guest cannot work without (value "y" or "m"). */
const REQUIRED_CONFIG = [
  "BLK_DEV_INITRD",
  "RD_GZIP",
  "DEVTMPFS",
  "ACPI",
  "ACPI_BUTTON",
  "INPUT_EVDEV",
  "SERIAL_8250",
  "SERIAL_8250_CONSOLE",
];
/** Modules loaded at boot, in this order (dependencies first are added automatically). */
const REQUIRED_MODULES = ["button", "evdev"];
/** Nice to have for demos (virtio disks, NICs, consoles, balloon); skipped when absent. */
const OPTIONAL_MODULES = [
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "virtio_balloon",
];

const FILES = { kernel: "vmlinuz", initrd: "initramfs.cpio.gz", manifest: "guest.json" };

class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

let quiet = false;
function log(message: string): void {
  if (!quiet) console.log(message);
}

/** Set by main(): whether we run as root (Deno.uid() would need --allow-sys, `id -u` does not). */
let isRoot = false;
let sudo = "sudo ";

// ---------------------------------------------------------------------------------------------
// Running commands

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<RunResult> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { LC_ALL: "C", DEBIAN_FRONTEND: "noninteractive" },
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new BuildError(
        `${cmd} not found: this builder needs a Debian-based host (apt-get, apt-cache, dpkg-deb)`,
      );
    }
    throw e;
  }
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function runOk(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<string> {
  const result = await run(cmd, args, options);
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-3).join(" | ");
    throw new BuildError(`\`${cmd} ${args.join(" ")}\` failed (exit ${result.code}): ${detail}`);
  }
  return result.stdout;
}

// ---------------------------------------------------------------------------------------------
// apt: resolve and download packages without installing them

/** apt-get options: as root, let apt write into our (root-owned) directory without the _apt user. */
const aptOpts = (): string[] => isRoot ? ["-o", "APT::Sandbox::User=root"] : [];

let aptUpdated = false;
async function aptUpdate(why: string): Promise<void> {
  if (aptUpdated) {
    throw new BuildError(`${why}, even after apt-get update`);
  }
  if (!isRoot) {
    throw new BuildError(`${why}: the apt package lists look stale; run: sudo apt-get update`);
  }
  log(`${why}: running apt-get update`);
  await runOk("apt-get", ["update", "-qq"]);
  aptUpdated = true;
}

/** The concrete `linux-image-6.x...` package a meta package such as `linux-image-cloud-amd64` points at. */
async function resolveKernelPackage(meta: string): Promise<string | undefined> {
  for (;;) {
    const result = await run("apt-cache", ["depends", "--no-recommends", "--no-suggests", meta]);
    if (result.code === 0) {
      for (const line of result.stdout.split("\n")) {
        const match = /^\s*\|?Depends:\s*(linux-image-\d\S*)/.exec(line);
        if (match) return match[1];
      }
    }
    // Either the package is unknown or it has no candidate: refresh the lists once.
    if (aptUpdated) return undefined;
    await aptUpdate(`cannot resolve ${meta}`);
  }
}

/** Downloads `pkg` into `dir` with `apt-get download`; returns the path of the .deb. */
async function aptDownload(pkg: string, dir: string): Promise<string> {
  for (;;) {
    const result = await run("apt-get", [...aptOpts(), "download", "-q", pkg], { cwd: dir });
    if (result.code === 0) break;
    const detail = result.stderr.trim().split("\n").slice(-1)[0] ?? "";
    if (aptUpdated) throw new BuildError(`apt-get download ${pkg} failed: ${detail}`);
    // 404s (superseded versions) and unknown packages are fixed by refreshing the lists.
    await aptUpdate(`apt-get download ${pkg} failed (${detail})`);
  }
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.startsWith(`${pkg}_`) && entry.name.endsWith(".deb")) {
      return join(dir, entry.name);
    }
  }
  throw new BuildError(`apt-get download ${pkg} succeeded but no ${pkg}_*.deb appeared in ${dir}`);
}

async function debField(deb: string, field: string): Promise<string> {
  return (await runOk("dpkg-deb", ["-f", deb, field])).trim();
}

// ---------------------------------------------------------------------------------------------
// Kernel

interface KernelModule {
  /** Normalised module name (dashes replaced by underscores). */
  name: string;
  /** Uncompressed .ko bytes. */
  data: Uint8Array;
}

interface Kernel {
  meta: string;
  pkg: string;
  version: string;
  release: string;
  image: string;
  modules: KernelModule[];
  skippedModules: string[];
}

const normalise = (name: string): string => name.replaceAll("-", "_");

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else if (entry.isFile) yield path;
  }
}

const MODULE_FILE = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/;

/** Reads one NUL-terminated `key=value` field of a module's .modinfo section. */
function modinfo(data: Uint8Array, key: string): string | undefined {
  const needle = new TextEncoder().encode(`${key}=`);
  outer: for (let i = 0; i + needle.length <= data.length; i++) {
    if (data[i] !== needle[0] || (i > 0 && data[i - 1] !== 0)) continue;
    for (let j = 1; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
    let end = i + needle.length;
    while (end < data.length && data[end] !== 0) end++;
    return new TextDecoder().decode(data.subarray(i + needle.length, end));
  }
  return undefined;
}

async function readModule(path: string): Promise<Uint8Array> {
  const ext = MODULE_FILE.exec(basename(path))?.[2];
  if (!ext) return await Deno.readFile(path);
  const tool = { ".xz": "xz", ".zst": "zstd", ".gz": "gzip" }[ext]!;
  const output = await new Deno.Command(tool, {
    args: ["-dc", path],
    stdout: "piped",
    stderr: "piped",
  })
    .output()
    .catch((e) => {
      throw new BuildError(
        `cannot decompress ${basename(path)}: ${tool} is missing (${sudo}apt-get install ${
          tool === "zstd" ? "zstd" : tool === "xz" ? "xz-utils" : "gzip"
        }): ${e}`,
      );
    });
  if (!output.success) throw new BuildError(`${tool} -dc ${path} failed`);
  return output.stdout;
}

/** Returns why `root` (an unpacked kernel package) is unusable, or the kernel on success. */
async function inspectKernel(
  root: string,
  meta: string,
  pkg: string,
  version: string,
): Promise<Kernel | string> {
  const boot = join(root, "boot");
  let image: string | undefined;
  let config: string | undefined;
  for await (const entry of Deno.readDir(boot)) {
    if (entry.name.startsWith("vmlinuz-")) image = join(boot, entry.name);
    if (entry.name.startsWith("config-")) config = join(boot, entry.name);
  }
  if (!image) return "no boot/vmlinuz-* in the package";
  const release = basename(image).slice("vmlinuz-".length);
  if (config) {
    const text = await Deno.readTextFile(config);
    const missing = REQUIRED_CONFIG.filter((opt) =>
      !new RegExp(`^CONFIG_${opt}=[ym]$`, "m").test(text)
    );
    if (missing.length) {
      return `kernel config lacks ${missing.map((o) => `CONFIG_${o}`).join(", ")}`;
    }
  }
  let modDir: string | undefined;
  for (const candidate of ["lib/modules", "usr/lib/modules"]) {
    if (await exists(join(root, candidate, release))) modDir = join(root, candidate, release);
  }
  if (!modDir) return `no lib/modules/${release} in the package`;
  const builtin = new Set<string>();
  try {
    for (const line of (await Deno.readTextFile(join(modDir, "modules.builtin"))).split("\n")) {
      const match = MODULE_FILE.exec(basename(line.trim()));
      if (match) builtin.add(normalise(match[1]));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const files = new Map<string, string>();
  for await (const path of walk(modDir)) {
    const match = MODULE_FILE.exec(basename(path));
    if (match) files.set(normalise(match[1]), path);
  }
  // The package ships no modules.dep (depmod runs at install time), so follow each module's
  // own `depends=` modinfo field instead; emit dependencies before their users.
  const ordered: KernelModule[] = [];
  const seen = new Set<string>();
  const skipped: string[] = [];
  const visit = async (name: string, chain: string[]): Promise<string | undefined> => {
    if (seen.has(name) || builtin.has(name)) return undefined;
    const path = files.get(name);
    if (!path) return `module ${[...chain, name].join(" -> ")} not found`;
    seen.add(name);
    const data = await readModule(path);
    const depends = (modinfo(data, "depends") ?? "").split(",").filter(Boolean).map(normalise);
    for (const dep of depends) {
      const problem = await visit(dep, [...chain, name]);
      if (problem) return problem;
    }
    ordered.push({ name, data });
    return undefined;
  };
  for (const name of REQUIRED_MODULES) {
    const problem = await visit(name, []);
    if (problem) return problem;
  }
  for (const name of OPTIONAL_MODULES) {
    if (await visit(name, [])) skipped.push(name);
  }
  return { meta, pkg, version, release, image, modules: ordered, skippedModules: skipped };
}

async function fetchKernel(work: string): Promise<Kernel> {
  const problems: string[] = [];
  for (const meta of KERNEL_PACKAGES) {
    const pkg = await resolveKernelPackage(meta);
    if (!pkg) {
      problems.push(`${meta}: no installable linux-image-* dependency`);
      continue;
    }
    const dir = join(work, meta);
    await Deno.mkdir(dir);
    log(`downloading ${pkg} (from ${meta})`);
    const deb = await aptDownload(pkg, dir);
    const version = await debField(deb, "Version");
    const root = join(dir, "root");
    await runOk("dpkg-deb", ["-x", deb, root]);
    await Deno.remove(deb);
    const kernel = await inspectKernel(root, meta, pkg, version);
    if (typeof kernel !== "string") return kernel;
    problems.push(`${pkg}: ${kernel}`);
    log(`${pkg} is unusable (${kernel}); trying the next kernel package`);
  }
  throw new BuildError(`no usable kernel package: ${problems.join("; ")}`);
}

// ---------------------------------------------------------------------------------------------
// busybox

interface Busybox {
  path: string;
  version: string;
  source: string;
}

/** True when `data` is an x86-64 ELF executable without a PT_INTERP header (statically linked). */
function isStaticX8664Elf(data: Uint8Array): boolean {
  if (data.length < 64 || data[0] !== 0x7f || data[1] !== 0x45 || data[2] !== 0x4c) return false;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data[4] !== 2 || data[5] !== 1 || view.getUint16(0x12, true) !== 0x3e) return false;
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > data.length) return false;
    if (view.getUint32(at, true) === 3) return false; // PT_INTERP
  }
  return true;
}

async function findBusybox(work: string): Promise<Busybox> {
  const status = await run("dpkg-query", ["-W", "-f=${Status}\t${Version}", BUSYBOX_PACKAGE]);
  const [state, version] = status.stdout.split("\t");
  if (status.code === 0 && state === "install ok installed" && version) {
    for (const path of ["/bin/busybox", "/usr/bin/busybox"]) {
      if ((await exists(path)) && isStaticX8664Elf(await Deno.readFile(path))) {
        return { path, version, source: `installed ${BUSYBOX_PACKAGE}` };
      }
    }
  }
  // Not installed (or not the static build): take it from the package without installing it.
  log(`${BUSYBOX_PACKAGE} is not installed; downloading it (not installing)`);
  const dir = join(work, BUSYBOX_PACKAGE);
  await Deno.mkdir(dir);
  let deb: string;
  try {
    deb = await aptDownload(BUSYBOX_PACKAGE, dir);
  } catch (e) {
    throw new BuildError(
      `${
        e instanceof Error ? e.message : e
      }; install it with: ${sudo}apt-get install -y ${BUSYBOX_PACKAGE}`,
    );
  }
  const root = join(dir, "root");
  await runOk("dpkg-deb", ["-x", deb, root]);
  for (const path of [join(root, "bin/busybox"), join(root, "usr/bin/busybox")]) {
    if ((await exists(path)) && isStaticX8664Elf(await Deno.readFile(path))) {
      return {
        path,
        version: await debField(deb, "Version"),
        source: `downloaded ${decodeURIComponent(basename(deb))}`,
      };
    }
  }
  throw new BuildError(`${basename(deb)} holds no static x86-64 busybox`);
}

// ---------------------------------------------------------------------------------------------
// The guest agent (qemu-ga) and its shared libraries

interface AgentLibrary {
  /** Path inside the guest: where `ldd` found it on the host (the loader: its PT_INTERP path). */
  path: string;
  /** Contents (symbolic links followed). */
  data: Uint8Array;
  /** The Debian package that ships it, and its version, for the manifest. */
  package: string;
  version: string;
}

interface Agent {
  version: string;
  binary: Uint8Array;
  libraries: AgentLibrary[];
}

async function installedVersion(pkg: string): Promise<string | undefined> {
  const status = await run("dpkg-query", ["-W", "-f=${Status}\t${Version}", pkg]);
  const [state, version] = status.stdout.split("\t");
  return status.code === 0 && state === "install ok installed" && version ? version : undefined;
}

/** The package owning `path` (`dpkg -S`, trying the /usr-merged spelling too) and its version. */
async function owner(path: string): Promise<{ package: string; version: string }> {
  for (const candidate of [path, await Deno.realPath(path)]) {
    const result = await run("dpkg-query", ["-S", candidate]);
    const pkg = result.code === 0 ? result.stdout.split(":")[0].trim() : "";
    if (pkg) {
      const version = (await run("dpkg-query", ["-W", "-f=${Version}", pkg])).stdout.trim();
      return { package: pkg, version };
    }
  }
  return { package: "unknown", version: "unknown" };
}

/**
 * Parses `ldd` output into absolute paths: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the
 * loader line `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file. Throws on `not found`.
 */
export function parseLdd(output: string, binary: string): string[] {
  const paths: string[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("linux-vdso") || line.startsWith("linux-gate")) continue;
    if (/=>\s*not found/.test(line)) {
      throw new BuildError(`${binary} needs ${line.split(/\s/)[0]}, which ldd cannot find`);
    }
    const match = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (match) paths.push(match[1]);
  }
  return paths;
}

/** The installed qemu-ga and the libraries it needs, or undefined (with a warning) without it. */
async function findAgent(): Promise<Agent | undefined> {
  const version = await installedVersion(AGENT_PACKAGE);
  if (!version || !(await exists(AGENT_BINARY))) {
    console.error(
      `build-guest: warning: ${AGENT_PACKAGE} is not installed, so the guest gets no agent ` +
        `(launch({ agent: true }) will refuse it); install it with: ` +
        `${sudo}apt-get install -y ${AGENT_PACKAGE}`,
    );
    return undefined;
  }
  const ldd = await run("ldd", [AGENT_BINARY]);
  if (ldd.code !== 0) {
    throw new BuildError(`ldd ${AGENT_BINARY} failed: ${(ldd.stderr || ldd.stdout).trim()}`);
  }
  const libraries: AgentLibrary[] = [];
  for (const path of parseLdd(ldd.stdout, AGENT_BINARY)) {
    libraries.push({ path, data: await Deno.readFile(path), ...(await owner(path)) });
  }
  if (!libraries.some((l) => /\/ld-linux[^/]*\.so/.test(l.path))) {
    throw new BuildError(`ldd ${AGENT_BINARY} named no dynamic loader: ${ldd.stdout.trim()}`);
  }
  return { version, binary: await Deno.readFile(AGENT_BINARY), libraries };
}

// ---------------------------------------------------------------------------------------------
// The initramfs

/**
 * Starts qemu-ga in the background when the VM has a virtio-serial device (virtio id 3) with a
 * port named ${AGENT_PORT}. There is no udev here, so the port is found by name in sysfs and
 * the /dev/virtio-ports/ link udev would make is made by hand. qemu-ga is restarted a second
 * after it dies (like a service manager would), which QEMU reports as VSERPORT_CHANGE.
 */
const AGENT_STARTER = `
# The guest agent, on the virtio-serial port named ${AGENT_PORT} (launch({ agent: true })).
if grep -qs '^0x0003$' /sys/bus/virtio/devices/*/device; then
  (
    port=
    # The host announces its ports after the driver loads: look every 10 ms for a second, then
    # every 100 ms for 20 s (no fork per look: \`read\` is a shell builtin).
    for i in $(seq 1 300); do
      for p in /sys/class/virtio-ports/*; do
        name=
        read -r name <$p/name
        if [ "$name" = ${AGENT_PORT} ] && [ -c /dev/\${p##*/} ]; then port=\${p##*/}; fi
      done
      [ -n "$port" ] && break
      if [ $i -le 100 ]; then usleep 10000; else usleep 100000; fi
    done
    if [ -z "$port" ]; then
      echo "qmpkit-guest: no virtio-serial port named ${AGENT_PORT}; qemu-ga not started" >/dev/kmsg
      exit 0
    fi
    mkdir -p /dev/virtio-ports
    ln -sf ../$port /dev/virtio-ports/${AGENT_PORT}
    while :; do
      ${AGENT_BINARY} -m virtio-serial -p /dev/virtio-ports/${AGENT_PORT} -l /var/log/qemu-ga.log
      echo "qmpkit-guest: qemu-ga exited (status $?); restarting it in 1s" >/dev/kmsg
      sleep 1
    done
  ) </dev/null >/dev/null 2>&1 &
fi
`;

const INIT_SCRIPT = (modules: string[], agent: boolean): string =>
  `#!/bin/sh
# qmpkit tiny guest /init (recipe ${RECIPE_VERSION}), generated by scripts/build-guest.ts
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=vt100 PS1='qmpkit# '
mount -t proc -o nosuid,noexec,nodev proc /proc
mount -t sysfs -o nosuid,noexec,nodev sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/log
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
hostname qmpkit-guest
for m in ${modules.join(" ")}; do
  insmod /lib/modules/$m.ko 2>/dev/null || echo "qmpkit-guest: insmod $m failed" >/dev/kmsg
done
ip link set lo up 2>/dev/null
${
    agent
      ? AGENT_STARTER
      : ""
  }# busybox acpid opens /dev/input/event0, event1, ... once at startup: wait for the power
# button's event node, start acpid, and wait until it holds that node open.
pwrbtn=
for i in $(seq 1 200); do
  for d in /sys/class/input/event*; do
    if [ "$(cat $d/device/name 2>/dev/null)" = "Power Button" ] && [ -c /dev/input/\${d##*/} ]; then
      pwrbtn=/dev/input/\${d##*/}
    fi
  done
  [ -n "$pwrbtn" ] && break
  usleep 10000
done
if [ -z "$pwrbtn" ]; then
  echo "qmpkit-guest: no ACPI power button input device; system_powerdown will not work"
else
  acpid -f -c /etc/acpi -l /dev/null </dev/null >/dev/null 2>&1 &
  acpid_pid=$!
  for i in $(seq 1 200); do
    ls -l /proc/$acpid_pid/fd 2>/dev/null | grep -q " $pwrbtn\$" && break
    usleep 10000
  done
fi
echo ${READY_MARKER}
while :; do
  setsid cttyhack sh -i
  sleep 0.1
done
`;

const POWEROFF_SCRIPT = `#!/bin/sh
# Run by busybox acpid on the ACPI power button (PWRF), i.e. QMP system_powerdown.
echo ${POWEROFF_MARKER} >/dev/console
sync
exec poweroff -f
`;

/**
 * busybox has no \`shutdown\`; qemu-ga's guest-shutdown runs
 * \`/sbin/shutdown -P|-H|-r +0 MESSAGE\` and reports an error unless it exits 0, so this one
 * starts the power-off (halt, reboot) in the background and exits 0 at once.
 */
const SHUTDOWN_SCRIPT = `#!/bin/sh
# qmpkit tiny guest: shutdown -P|-H|-r [+0] [message], as run by qemu-ga's guest-shutdown.
action=poweroff
for arg in "$@"; do
  case "$arg" in
    -P) action=poweroff ;;
    -H) action=halt ;;
    -r) action=reboot ;;
  esac
done
[ "$action" = poweroff ] && echo ${POWEROFF_MARKER} >/dev/console
sync
(sleep 0.1; $action -f) </dev/null >/dev/null 2>&1 &
exit 0
`;

const OS_RELEASE = `NAME="qmpkit tiny guest"
ID=qmpkit-tiny
VERSION_ID=${RECIPE_VERSION}
PRETTY_NAME="qmpkit tiny guest (recipe ${RECIPE_VERSION})"
`;

interface CpioEntry {
  path: string;
  mode: number;
  data?: Uint8Array;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

/** Encodes entries as a newc ("070701") cpio archive, ending with the TRAILER!!! entry. */
function newcCpio(entries: CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (chunk: Uint8Array): void => {
    chunks.push(chunk);
    size += chunk.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      chunks.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const hex = (n: number): string => n.toString(16).padStart(8, "0");
  const all = [...entries, { path: "TRAILER!!!", mode: 0 }];
  all.forEach((entry, i) => {
    const data = entry.data ?? new Uint8Array();
    const name = encoder.encode(`${entry.path}\0`);
    const isDir = (entry.mode & 0o170000) === S_IFDIR;
    const fields = [
      entry.path === "TRAILER!!!" ? 0 : i + 1, // ino
      entry.mode,
      0, // uid
      0, // gid
      isDir ? 2 : 1, // nlink
      0, // mtime: fixed, so identical inputs give identical archives
      data.length,
      0, // devmajor
      0, // devminor
      entry.rdev?.[0] ?? 0,
      entry.rdev?.[1] ?? 0,
      name.length,
      0, // check
    ];
    // The header (110 bytes) and name are padded together to a multiple of 4.
    const header = encoder.encode(`070701${fields.map(hex).join("")}`);
    const headerAndName = new Uint8Array(header.length + name.length);
    headerAndName.set(header);
    headerAndName.set(name, header.length);
    push(headerAndName);
    if (data.length) push(data);
  });
  return concatBytes(chunks, size);
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function buildInitramfs(
  kernel: Kernel,
  busybox: Busybox,
  agent: Agent | undefined,
): Promise<Uint8Array> {
  const encoder = new TextEncoder();
  const dirs = new Set<string>();
  const entries: CpioEntry[] = [];
  const addDir = (path: string): void => {
    if (!path || path === "." || dirs.has(path)) return;
    addDir(dirname(path) === "." ? "" : dirname(path));
    dirs.add(path);
    entries.push({ path, mode: S_IFDIR | 0o755 });
  };
  const addFile = (path: string, data: Uint8Array, perm: number): void => {
    addDir(dirname(path) === "." ? "" : dirname(path));
    entries.push({ path, mode: S_IFREG | perm, data });
  };
  for (const dir of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run"]) {
    addDir(dir);
  }
  for (const dir of ["tmp", "root", "var/log", "lib/modules", "etc/acpi/PWRF"]) addDir(dir);
  entries.push({ path: "dev/console", mode: S_IFCHR | 0o600, rdev: [5, 1] });
  entries.push({ path: "dev/null", mode: S_IFCHR | 0o666, rdev: [1, 3] });
  entries.push({ path: "dev/ttyS0", mode: S_IFCHR | 0o600, rdev: [4, 64] });
  addFile("bin/busybox", await Deno.readFile(busybox.path), 0o755);
  const applets = (await runOk(busybox.path, ["--list-full"])).split("\n").map((s) => s.trim())
    .filter((s) => s && s !== "bin/busybox");
  for (const applet of applets) {
    addDir(dirname(applet));
    entries.push({ path: applet, mode: S_IFLNK | 0o777, data: encoder.encode("/bin/busybox") });
  }
  if (!applets.includes("usr/sbin/acpid") && !applets.includes("sbin/acpid")) {
    throw new BuildError(`${busybox.path} has no acpid applet`);
  }
  for (const mod of kernel.modules) addFile(`lib/modules/${mod.name}.ko`, mod.data, 0o644);
  const init = INIT_SCRIPT(kernel.modules.map((m) => m.name), agent !== undefined);
  addFile("init", encoder.encode(init), 0o755);
  addFile("etc/acpi/PWRF/00000080", encoder.encode(POWEROFF_SCRIPT), 0o755);
  addFile("sbin/shutdown", encoder.encode(SHUTDOWN_SCRIPT), 0o755);
  addFile("etc/os-release", encoder.encode(OS_RELEASE), 0o644);
  if (agent) {
    addFile(AGENT_BINARY.slice(1), agent.binary, 0o755);
    for (const lib of agent.libraries) addFile(lib.path.slice(1), lib.data, 0o755);
    // qemu-ga's state directory (pid file, fsfreeze state) is /var/run.
    addDir("var/lib");
    entries.push({ path: "var/run", mode: S_IFLNK | 0o777, data: encoder.encode("../run") });
  }
  addFile("etc/passwd", encoder.encode("root:x:0:0:root:/root:/bin/sh\n"), 0o644);
  addFile("etc/group", encoder.encode("root:x:0:\ntty:x:5:\n"), 0o644);
  return await gzip(newcCpio(entries));
}

// ---------------------------------------------------------------------------------------------
// Cache management

async function cacheIsCurrent(dir: string): Promise<Record<string, unknown> | undefined> {
  try {
    const manifest = JSON.parse(await Deno.readTextFile(join(dir, FILES.manifest)));
    if (manifest?.recipe !== RECIPE_VERSION) return undefined;
    // The agent is copied from the host: rebuild when its package was installed, upgraded or
    // removed since.
    if ((manifest.agent?.version ?? undefined) !== await installedVersion(AGENT_PACKAGE)) {
      return undefined;
    }
    for (const file of [FILES.kernel, FILES.initrd]) {
      const info = await Deno.stat(join(dir, file));
      if (!info.isFile || info.size === 0) return undefined;
    }
    return manifest;
  } catch {
    return undefined;
  }
}

async function removeQuietly(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch(() => {});
}

async function build(cacheDir: string, reason: string): Promise<void> {
  const started = performance.now();
  const parent = dirname(cacheDir);
  const name = basename(cacheDir);
  await Deno.mkdir(parent, { recursive: true });
  // One builder at a time per cache; stale staging directories of interrupted builds are
  // removed while holding the lock.
  using lock = await Deno.open(join(parent, `.${name}.lock`), {
    create: true,
    write: true,
  });
  await lock.lock(true);
  for await (const entry of Deno.readDir(parent)) {
    if (entry.name.startsWith(`.${name}.tmp-`) || entry.name.startsWith(`.${name}.old-`)) {
      await removeQuietly(join(parent, entry.name));
    }
  }
  const staging = await Deno.makeTempDir({ dir: parent, prefix: `.${name}.tmp-` });
  const cleanup = (): void => {
    try {
      Deno.removeSync(staging, { recursive: true });
    } catch { /* already gone */ }
  };
  const onSignal = (): void => {
    cleanup();
    console.error("build-guest: interrupted; nothing was changed in the cache");
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    log(`building tiny guest in ${cacheDir} (${reason})`);
    const work = join(staging, "work");
    await Deno.mkdir(work);
    const kernel = await fetchKernel(work);
    const busybox = await findBusybox(work);
    log(`kernel ${kernel.pkg} ${kernel.version}; busybox ${busybox.version} (${busybox.source})`);
    const agent = await findAgent();
    if (agent) {
      const missing = AGENT_MODULES.filter((m) => kernel.skippedModules.includes(m));
      if (missing.length) {
        throw new BuildError(
          `${kernel.pkg} lacks ${missing.join(", ")}, which the guest agent needs (virtio-serial)`,
        );
      }
      log(
        `agent: ${AGENT_PACKAGE} ${agent.version} with ${agent.libraries.length} libraries ` +
          `(${agent.libraries.map((l) => basename(l.path)).join(" ")})`,
      );
    }
    const out = join(staging, "guest");
    await Deno.mkdir(out);
    await Deno.copyFile(kernel.image, join(out, FILES.kernel));
    const initrd = await buildInitramfs(kernel, busybox, agent);
    await Deno.writeFile(join(out, FILES.initrd), initrd);
    const kernelSize = (await Deno.stat(join(out, FILES.kernel))).size;
    const manifest = {
      recipe: RECIPE_VERSION,
      builtAt: new Date().toISOString(),
      kernel: {
        package: kernel.pkg,
        version: kernel.version,
        metaPackage: kernel.meta,
        release: kernel.release,
        file: FILES.kernel,
        size: kernelSize,
      },
      initrd: {
        file: FILES.initrd,
        size: initrd.length,
        modules: kernel.modules.map((m) => m.name),
        skippedModules: kernel.skippedModules,
      },
      busybox: { package: BUSYBOX_PACKAGE, version: busybox.version, source: busybox.source },
      agent: agent
        ? {
          package: AGENT_PACKAGE,
          version: agent.version,
          binary: AGENT_BINARY,
          port: AGENT_PORT,
          libraries: agent.libraries.map((l) => ({
            path: l.path,
            package: l.package,
            version: l.version,
          })),
        }
        : null,
      readyMarker: READY_MARKER,
      poweroffMarker: POWEROFF_MARKER,
      append: APPEND,
      qemuArgs: QEMU_ARGS,
    };
    await Deno.writeTextFile(join(out, FILES.manifest), `${JSON.stringify(manifest, null, 2)}\n`);
    await Deno.remove(work, { recursive: true });
    // Swap in: the old cache (if any) is moved aside first; a crash between the two renames
    // leaves no cache (rebuilt next time), never a mixed one.
    const old = join(parent, `.${name}.old-${crypto.randomUUID()}`);
    if (await exists(cacheDir)) await Deno.rename(cacheDir, old);
    await Deno.rename(out, cacheDir);
    await removeQuietly(old);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    log(
      `built in ${seconds}s: ${FILES.kernel} ${(kernelSize / 1048576).toFixed(1)} MiB, ` +
        `${FILES.initrd} ${(initrd.length / 1048576).toFixed(1)} MiB, ` +
        `modules: ${kernel.modules.map((m) => m.name).join(" ")}` +
        (agent ? `; agent ${AGENT_PACKAGE} ${agent.version}` : "; no agent"),
    );
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    cleanup();
  }
}

async function main(args: string[]): Promise<void> {
  let force = false;
  for (const arg of args) {
    if (arg === "--force") force = true;
    else if (arg === "--quiet") quiet = true;
    else if (arg === "--help" || arg === "-h") {
      console.log(
        "usage: build-guest.ts [--force] [--quiet]\n" +
          "Builds the tiny QEMU test guest (Debian kernel + busybox initramfs) into the cache.",
      );
      return;
    } else {throw new BuildError(
        `unknown argument ${arg} (usage: build-guest.ts [--force] [--quiet])`,
      );}
  }
  isRoot = (await runOk("id", ["-u"])).trim() === "0";
  sudo = isRoot ? "" : "sudo ";
  const cacheDir = guestCacheDir();
  const current = force ? undefined : await cacheIsCurrent(cacheDir);
  if (current) {
    log(`tiny guest is up to date (recipe ${RECIPE_VERSION}): ${cacheDir}`);
  } else {
    const reason = force
      ? "--force"
      : (await exists(join(cacheDir, FILES.manifest)))
      ? "recipe changed or files missing"
      : "not built yet";
    await build(cacheDir, reason);
  }
  console.log(cacheDir);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    const message = e instanceof BuildError
      ? e.message
      : e instanceof Deno.errors.PermissionDenied
      ? `permission denied: ${e.message} (run as root, or fix the cache directory's permissions)`
      : e instanceof Error
      ? `${e.name}: ${e.message}`
      : String(e);
    console.error(`build-guest: error: ${message.replaceAll("\n", " ")}`);
    Deno.exit(1);
  }
}
