/**
 * Commands/s through libvirt against one TCG domain, sequential `query-status`:
 * qmpkit over libvirt's C API (FFI, `connect("libvirt:DOMAIN")`), `virsh
 * qemu-monitor-command` spawned per command, and qmpkit on a direct unix socket
 * of the same QEMU (a second `-qmp` monitor given via `<qemu:commandline>`).
 * Runs rotate (A B C, B C A, ...). Needs libvirt (root; starts libvirtd when
 * not running, like the tests) and `--allow-ffi`.
 *
 *   deno run -A bench/libvirt.ts [--quick] [--json]
 *
 * @module
 */
import { connect } from "../lib/client.ts";
import { emit, flag, median, num, type Row } from "./main.ts";
import {
  createDomain,
  ensureLibvirtd,
  libvirtSkipReason,
  releaseLibvirtd,
} from "../tests/helpers/libvirtd.ts";

const quick = flag("quick") !== undefined;
const RUNS = quick ? 2 : 3;
const N_FFI = quick ? 200 : 500;
const N_VIRSH = quick ? 20 : 40;
const N_UNIX = quick ? 1000 : 3000;

type Kind = "ffi" | "virsh" | "unix";

async function ffi(domain: string): Promise<number> {
  await using qmp = await connect(`libvirt:${domain}`, { timeout: "10s" });
  for (let i = 0; i < 20; i++) await qmp.execute("query-status");
  const t0 = performance.now();
  for (let i = 0; i < N_FFI; i++) await qmp.execute("query-status");
  return N_FFI / ((performance.now() - t0) / 1000);
}

async function virsh(domain: string): Promise<number> {
  const once = async () => {
    const out = await new Deno.Command("virsh", {
      args: ["-c", "qemu:///system", "qemu-monitor-command", domain, '{"execute":"query-status"}'],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    JSON.parse(new TextDecoder().decode(out.stdout));
  };
  await once();
  const t0 = performance.now();
  for (let i = 0; i < N_VIRSH; i++) await once();
  return N_VIRSH / ((performance.now() - t0) / 1000);
}

async function unix(socket: string): Promise<number> {
  await using qmp = await connect(`unix:${socket}`, { timeout: "10s", retry: true });
  for (let i = 0; i < 100; i++) await qmp.execute("query-status");
  const t0 = performance.now();
  for (let i = 0; i < N_UNIX; i++) await qmp.execute("query-status");
  return N_UNIX / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const skip = libvirtSkipReason();
  if (skip) {
    emit([{
      figure: "libvirt (skipped)",
      ours: "—",
      baseline: "—",
      ratio: NaN,
      target: "—",
      met: undefined,
    }], [skip]);
    return;
  }
  await ensureLibvirtd();
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-libvirt-" });
  await Deno.chmod(dir, 0o777); // QEMU may run as libvirt-qemu: it creates the socket here
  const socket = `${dir}/direct.sock`;
  const dom = await createDomain({ qemuArgs: ["-qmp", `unix:${socket},server=on,wait=off`] });
  const all: Record<Kind, number[]> = { ffi: [], virsh: [], unix: [] };
  const order: Kind[] = ["ffi", "virsh", "unix"];
  try {
    for (let r = 0; r < RUNS; r++) {
      for (let i = 0; i < order.length; i++) {
        const kind = order[(i + r) % order.length];
        all[kind].push(
          kind === "ffi"
            ? await ffi(dom.name)
            : kind === "virsh"
            ? await virsh(dom.name)
            : await unix(socket),
        );
      }
    }
  } finally {
    await dom.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    await releaseLibvirtd();
  }
  const f = median(all.ffi);
  const v = median(all.virsh);
  const u = median(all.unix);
  const rate = (n: number) => `${num(n)}/s`;
  const rows: Row[] = [
    {
      figure: "libvirt: query-status via FFI (libvirt.so)",
      ours: rate(f),
      baseline: rate(v),
      ratio: f / v,
      target: "report",
      met: undefined,
    },
    {
      figure: "  virsh qemu-monitor-command per command",
      ours: rate(v),
      baseline: rate(v),
      ratio: 1,
      target: "—",
      met: undefined,
    },
    {
      figure: "  direct unix socket, same QEMU",
      ours: rate(u),
      baseline: rate(f),
      ratio: u / f,
      target: "—",
      met: undefined,
    },
  ];
  const list = (xs: number[]) => `[${xs.map((x) => num(x)).join(" ")}]`;
  emit(rows, [
    `sequential query-status on one TCG domain (machine pc, 64 MiB, no disks), ${RUNS} runs ` +
    `rotating; ffi N=${N_FFI} ${list(all.ffi)}; virsh N=${N_VIRSH} ${list(all.virsh)}; ` +
    `unix N=${N_UNIX} ${list(all.unix)}; baseline of the first row: virsh per command; ` +
    `of the last: FFI`,
  ]);
}

if (import.meta.main) await main();
