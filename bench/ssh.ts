/**
 * QMP over SSH next to unix: `query-status` round trips/s and the connect
 * time (ssh start, key exchange, auth, forward, greeting, negotiation) through
 * a throwaway sshd on 127.0.0.1 (tests/helpers/sshd.ts) to a `launch()`ed QEMU
 * (`-machine none`), against the same QEMU's unix socket with the same client.
 * Interleaved (ssh, unix, unix, ssh, ...), medians. Loopback only: the figure
 * is ssh's own cost (two extra processes, encryption, two more socket hops),
 * not a network's.
 *
 *   deno run -A bench/ssh.ts [--n=2000] [--runs=5] [--quick] [--json]
 *
 * @module
 */
import { connect } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import type { SshOptions } from "../lib/ssh_transport.ts";
import { startSshd } from "../tests/helpers/sshd.ts";
import { emit, flag, median, num, queryStatusRate, type RoundTripMode, type Row } from "./main.ts";

type Mode = RoundTripMode;

async function roundTrips(
  address: string,
  ssh: SshOptions | undefined,
  mode: Mode,
  n: number,
  warmup: number,
): Promise<{ perSecond: number; connectMs: number }> {
  const t0 = performance.now();
  await using qmp = await connect(address, { timeout: "10s", oob: mode === "pipe", ssh });
  const connectMs = performance.now() - t0;
  return { perSecond: await queryStatusRate(qmp, mode, n, warmup), connectMs };
}

/** Runs both modes over ssh and unix, interleaved `runs` times; returns table rows. */
export async function bench(
  options: { n: number; runs: number; warmup: number },
): Promise<{ rows: Row[]; notes: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-bench-ssh-" });
  const sock = `${dir}/bench.sock`;
  try {
    await using sshd = await startSshd();
    await using _vm = await launch({
      name: "bench-ssh",
      args: ["-qmp", `unix:${sock},server=on,wait=off`],
      timeout: "20s",
    });
    const ssh = { configFile: sshd.configFile };
    const sides = [
      { label: "ssh", address: sshd.url(sock), ssh },
      { label: "unix", address: `unix:${sock}`, ssh: undefined },
    ];
    const rate = new Map<string, number[]>();
    const connectMs = new Map<string, number[]>();
    const push = (m: Map<string, number[]>, k: string, v: number) =>
      m.set(k, [...(m.get(k) ?? []), v]);
    for (let r = 0; r < options.runs; r++) {
      for (const mode of ["seq", "pipe"] as const) {
        for (const side of r % 2 ? [...sides].reverse() : sides) {
          const out = await roundTrips(side.address, side.ssh, mode, options.n, options.warmup);
          push(rate, `${mode}:${side.label}`, out.perSecond);
          push(connectMs, side.label, out.connectMs);
        }
      }
    }
    const med = (m: Map<string, number[]>, k: string) => median(m.get(k)!);
    const perSecond = (x: number) => `${num(x)}/s`;
    const ms = (x: number) => `${num(x, 1)} ms`;
    const row = (figure: string, ours: number, base: number, fmt: (x: number) => string): Row => ({
      figure,
      ours: fmt(ours),
      baseline: fmt(base),
      ratio: ours / base,
      target: "report",
      met: undefined,
    });
    const rows: Row[] = [
      row(
        "ssh:// sequential query-status vs unix",
        med(rate, "seq:ssh"),
        med(rate, "seq:unix"),
        perSecond,
      ),
      row(
        "ssh:// pipelined, oob, 8 in flight vs unix",
        med(rate, "pipe:ssh"),
        med(rate, "pipe:unix"),
        perSecond,
      ),
      row("ssh:// connect+negotiate vs unix", med(connectMs, "ssh"), med(connectMs, "unix"), ms),
    ];
    const each = (m: Map<string, number[]>, k: string, f: (x: number) => string) =>
      `${k} [${m.get(k)!.map(f).join(" ")}]`;
    const notes = [
      `N=${options.n} (+${options.warmup} warm-up) per run, ${options.runs} runs, order ` +
      `alternating; same QEMU, same client; sshd and ssh on 127.0.0.1 (OpenSSH, default ` +
      `ciphers); ` + [...rate.keys()].map((k) => each(rate, k, (x) => num(x))).join("; ") +
      "; connect " +
      [...connectMs.keys()].map((k) => each(connectMs, k, (x) => num(x, 1))).join("; ") + " ms",
    ];
    return { rows, notes };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const quick = flag("quick") !== undefined;
  const out = await bench({
    n: Number(flag("n") ?? (quick ? 500 : 2000)),
    runs: Number(flag("runs") ?? (quick ? 3 : 5)),
    warmup: 200,
  });
  emit(out.rows, out.notes);
}
