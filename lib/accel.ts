/**
 * Choosing QEMU's accelerator: KVM only where KVM really runs guest code at
 * speed, TCG otherwise, and the same answer whatever Deno's permission flags.
 *
 * A `/dev/kvm` that opens is not a KVM that works: under some nested
 * virtualization a KVM guest executes about a million instructions a second
 * and a Linux guest never prints a byte. So `"auto"` asks QEMU itself (which
 * opens `/dev/kvm` whatever Deno may open) to run a tiny firmware under KVM:
 * it prints `S` on the serial port, enters protected mode, counts a 10 million
 * iteration loop down, prints `E` and exits through `isa-debug-exit`. A real
 * KVM does the loop in a few ms; the probe gives it {@link PROBE_LOOP_MS}.
 * The result is cached per process and QEMU binary.
 *
 * @module
 */
import { QmpError } from "./errors.ts";
import { guardCommand, killProcessGroup } from "./orphan_guard.ts";
import { signalChild, spawnDetached } from "./child_process.ts";

/** Accelerator choice: `"auto"` uses KVM when a probe shows it runs guest code, TCG otherwise. */
export type Accel = "auto" | "kvm" | "tcg";

/** The accelerator picked, and why (for logs and reports). */
export interface AccelChoice {
  /** The accelerator to pass to `-accel`. */
  accel: "kvm" | "tcg";
  /** One line saying why it was picked, e.g. `QMPKIT_ACCEL=tcg` or the probe's verdict. */
  reason: string;
  /** How long the KVM probe took, in ms, when one ran in this call (0 when cached or not needed). */
  probeMs: number;
}

/** Options of {@link resolveAccel}. */
export interface ResolveAccelOptions {
  /** QEMU binary to probe with (default: `$QMPKIT_QEMU`, else `qemu-system-x86_64`). */
  binary?: string;
  /**
   * The `-machine` type the accelerator is for: with `none` (no vCPU, no guest
   * code) `"auto"` picks TCG without probing.
   */
  machine?: string;
}

/** How long the probe may take to print its first byte (QEMU startup). */
export const PROBE_START_MS = 1500;
/** How long the probe's 10-million-iteration loop may take under KVM. */
export const PROBE_LOOP_MS = 300;
const EXIT_OK = (0x2a << 1) | 1; // isa-debug-exit: (value << 1) | 1

/**
 * The probe firmware (64 KiB BIOS image, mapped at 0xF0000), from:
 *
 * ```
 * .code16                          # at 0xF0000
 *   mov $0x3f8,%dx ; mov $'S',%al ; out %al,%dx
 *   cli ; lgdtl %cs:gdtdesc
 *   mov %cr0,%eax ; or $1,%al ; mov %eax,%cr0
 *   ljmpl $0x08,$(0xf0000 + pm)
 * .code32
 * pm: mov $10000000,%ecx
 * 1:  dec %ecx ; jnz 1b
 *   mov $'E',%al ; out %al,%dx
 *   mov $0x2a,%al ; out %al,$0xf4  # isa-debug-exit: QEMU exits with 85
 * 2:  hlt ; jmp 2b
 * gdt: .quad 0, 0x00cf9a000000ffff  # flat 32-bit code
 * gdtdesc: .word 15 ; .long 0xf0000 + gdt
 * .code16
 * .org 0xfff0                      # reset vector
 *   ljmp $0xf000,$start
 * ```
 */
function probeFirmware(): Uint8Array {
  const image = new Uint8Array(0x10000);
  const code = "baf803b053eefa2e660f011640000f20c00c010f22c066ea1e000f000800b980" +
    "9698004975fdb045eeb02ae6f4f4ebfd0000000000000000ffff0000009acf00" +
    "0f0030000f00";
  image.set(code.match(/../g)!.map((b) => parseInt(b, 16)));
  image.set([0xea, 0x00, 0x00, 0x00, 0xf0], 0xfff0);
  return image;
}

interface ProbeVerdict {
  ok: boolean;
  reason: string;
  /** Worth a notice: KVM is there but unusable (not merely absent). */
  notice: boolean;
  ms: number;
}

const probes = new Map<string, Promise<ProbeVerdict>>();
let noticed = false;

/**
 * Picks the accelerator for `accel`:
 *
 * 1. `"kvm"` or `"tcg"`: that one.
 * 2. `"auto"` with `QMPKIT_ACCEL=tcg|kvm` set: that one (`QMPKIT_ACCEL=auto` or
 *    empty: as if unset; anything else is an error).
 * 3. `"auto"` for `-machine none`: TCG (no guest code runs, nothing to probe).
 * 4. `"auto"`: KVM when the probe (see the module doc; at most about
 *    {@link PROBE_START_MS} + {@link PROBE_LOOP_MS}, once per process and
 *    binary) shows KVM running guest code at speed, else TCG, with a one-line
 *    notice on stderr (once) when `/dev/kvm` exists but KVM is unusable.
 *
 * The answer does not depend on Deno's permission flags: QEMU opens `/dev/kvm`,
 * not Deno. Running the probe needs the permission to run QEMU that
 * {@link launch} needs anyway.
 */
export async function resolveAccel(
  accel: Accel = "auto",
  options: ResolveAccelOptions = {},
): Promise<AccelChoice> {
  if (accel === "kvm" || accel === "tcg") {
    return { accel, reason: `accel: "${accel}" was asked for`, probeMs: 0 };
  }
  if (accel !== "auto") {
    throw new TypeError(`Unknown accel ${JSON.stringify(accel)}: use "auto", "kvm" or "tcg"`);
  }
  const env = envAccel();
  if (env) return { accel: env, reason: `QMPKIT_ACCEL=${env}`, probeMs: 0 };
  if (options.machine !== undefined && /^none(,|$)/.test(options.machine)) {
    return {
      accel: "tcg",
      reason: "-machine none runs no guest code (KVM not probed)",
      probeMs: 0,
    };
  }
  const binary = options.binary ?? envGet("QMPKIT_QEMU") ?? "qemu-system-x86_64";
  let probe = probes.get(binary);
  const fresh = probe === undefined;
  if (!probe) {
    probe = probeKvm(binary);
    probes.set(binary, probe);
  }
  const verdict = await probe;
  if (verdict.ok) {
    return { accel: "kvm", reason: verdict.reason, probeMs: fresh ? verdict.ms : 0 };
  }
  if (verdict.notice && !noticed) {
    noticed = true;
    console.warn(
      `qmpkit: KVM is not usable here, using TCG (${verdict.reason}). ` +
        `Set QMPKIT_ACCEL=tcg to skip the probe, or QMPKIT_ACCEL=kvm to insist.`,
    );
  }
  return { accel: "tcg", reason: verdict.reason, probeMs: fresh ? verdict.ms : 0 };
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: as if unset
  }
}

function envAccel(): "kvm" | "tcg" | undefined {
  const value = envGet("QMPKIT_ACCEL")?.trim().toLowerCase();
  if (value === undefined || value === "" || value === "auto") return undefined;
  if (value === "kvm" || value === "tcg") return value;
  throw new QmpError(
    `QMPKIT_ACCEL=${JSON.stringify(envGet("QMPKIT_ACCEL"))} is not an accelerator: ` +
      `set it to tcg, kvm or auto (or unset it)`,
  );
}

/** Runs the probe firmware under `-accel kvm`; never throws, never takes much over 2 s. */
async function probeKvm(binary: string): Promise<ProbeVerdict> {
  const t0 = performance.now();
  const elapsed = () => Math.round(performance.now() - t0);
  let dir: string;
  try {
    dir = await Deno.makeTempDir({ prefix: "qmpkit-kvm-probe-" });
    await Deno.writeFile(`${dir}/probe.bin`, probeFirmware());
  } catch (e) {
    return { ok: false, notice: true, ms: elapsed(), reason: `KVM probe not run: ${message(e)}` };
  }
  const cmd = guardCommand(binary, [
    "-M",
    "pc",
    "-accel",
    "kvm",
    "-m",
    "16",
    "-bios",
    `${dir}/probe.bin`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=0x04",
  ]);
  let child: Deno.ChildProcess;
  try {
    child = spawnDetached(cmd, "null");
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return { ok: false, notice: false, ms: elapsed(), reason: `KVM probe not run: ${message(e)}` };
  }
  const stderr = new Response(child.stderr).text().catch(() => "");
  const out = child.stdout.getReader();
  // One reader: notes when S and E arrive; EOF (QEMU exited) settles both.
  let seen = "";
  let eof = false;
  const mark = { S: deferred(), E: deferred() };
  const reading = (async () => {
    const decoder = new TextDecoder();
    while (true) {
      const { value, done } = await out.read();
      if (done) {
        eof = true;
        break;
      }
      seen += decoder.decode(value, { stream: true });
      if (seen.includes("S")) mark.S.resolve(true);
      if (seen.includes("E")) mark.E.resolve(true);
    }
  })().catch(() => {}).finally(() => {
    mark.S.resolve(false);
    mark.E.resolve(false);
  });
  let exitedByItself: Deno.CommandStatus | undefined;
  const exited = child.status.then((s) => s);
  let started = false;
  let loopMs = 0;
  try {
    started = await settlesTrue(mark.S.promise, PROBE_START_MS);
    if (started) {
      const t1 = performance.now();
      if (await settlesTrue(mark.E.promise, PROBE_LOOP_MS)) loopMs = performance.now() - t1;
    }
    exitedByItself = await settlesWith(exited, eof ? 1000 : 0); // EOF: it is exiting
  } finally {
    signalChild(child, "SIGKILL");
    await exited;
    killProcessGroup(child.pid);
    await out.cancel().catch(() => {});
    await reading;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const said = (await stderr).split("\n").map((l) => l.replace(/^[^:]*qemu[^:]*: /, "").trim())
    .find((l) => l && !/^warning:/.test(l));
  const ms = elapsed();
  if (seen.includes("E") || exitedByItself?.code === EXIT_OK) {
    return {
      ok: true,
      notice: false,
      ms,
      reason: `KVM probe: a guest loop of 10M iterations took ${
        Math.max(1, Math.round(loopMs))
      } ms`,
    };
  }
  if (started) {
    return {
      ok: false,
      notice: true,
      ms,
      reason: `KVM runs guest code far too slowly: a guest loop of 10M iterations was not done ` +
        `after ${PROBE_LOOP_MS} ms (TCG needs ~50 ms; nested virtualization?)`,
    };
  }
  if (exitedByItself) {
    const absent = /No such file or directory/.test(said ?? "");
    return {
      ok: false,
      notice: !absent,
      ms,
      reason: `QEMU cannot use KVM: ${said ?? `exit code ${exitedByItself.code}`}`,
    };
  }
  return {
    ok: false,
    notice: true,
    ms,
    reason: `the KVM probe guest printed nothing within ${PROBE_START_MS} ms`,
  };
}

function deferred(): { promise: Promise<boolean>; resolve: (v: boolean) => void } {
  let resolve!: (v: boolean) => void;
  const promise = new Promise<boolean>((r) => (resolve = r));
  return { promise, resolve };
}

/** True when `p` settles with `true` within `ms`. */
async function settlesTrue(p: Promise<boolean>, ms: number): Promise<boolean> {
  return (await settlesWith(p, ms)) === true;
}

/** `p`'s value when it settles within `ms` (0: already settled), else `undefined`. */
async function settlesWith<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
