/**
 * Round trips of `query-status` over the remote transports, next to a unix
 * socket, against one real QEMU (`-machine none`, started with `launch()`):
 * a unix monitor (a second `-qmp`) and a TLS monitor (`launch({ tls })`, with
 * throwaway certificates made by openssl), without and with a client
 * certificate (the Deno.startTls and node:tls paths). Sequential (one at a
 * time) and pipelined (oob, 8 in flight), runs interleaved (order rotating),
 * medians. The ratio is TLS / unix: what encryption (and QEMU's TLS read path,
 * plus the extra 1-byte record per write) costs. A report, not a target.
 *
 *   deno run -A bench/remote.ts [--n=2000] [--runs=5] [--quick] [--json]
 *
 * @module
 */
import { connect, type ConnectOptions } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import { LOCAL_SAN, makePki } from "../tests/helpers/tls_pki.ts";
import { emit, flag, median, num, queryStatusRate, type RoundTripMode, type Row } from "./main.ts";

type Mode = RoundTripMode;

async function roundTrips(
  address: string,
  options: ConnectOptions,
  mode: Mode,
  n: number,
  warmup: number,
): Promise<number> {
  await using qmp = await connect(address, { ...options, timeout: "10s", oob: mode === "pipe" });
  return await queryStatusRate(qmp, mode, n, warmup);
}

async function main(): Promise<void> {
  const quick = flag("quick") !== undefined;
  const n = Number(flag("n") ?? (quick ? 500 : 2000));
  const runs = Number(flag("runs") ?? (quick ? 3 : 5));
  const warmup = Math.min(200, n);
  await using pki = await makePki();
  const dir = await pki.serverDir(
    "bench",
    await pki.leaf("server", {
      usage: "server",
      san: LOCAL_SAN,
    }),
  );
  const sock = `${pki.dir}/bench-qmp.sock`;
  await using vm = await launch({
    tls: { dir },
    args: ["-qmp", `unix:${sock},server=on,wait=off`],
    timeout: "30s",
  });
  const client = await pki.leaf("client", { usage: "client" });
  const targets = {
    unix: { address: `unix:${sock}`, options: {} as ConnectOptions },
    tls: { address: vm.tlsAddress!, options: { tls: { caFile: pki.caFile } } },
    // A client certificate takes the node:tls path (QEMU does not ask for it here).
    cert: {
      address: vm.tlsAddress!,
      options: { tls: { caFile: pki.caFile, certFile: client.cert, keyFile: client.key } },
    },
  };
  type Kind = keyof typeof targets;
  const results: Record<Mode, Record<Kind, number[]>> = {
    seq: { unix: [], tls: [], cert: [] },
    pipe: { unix: [], tls: [], cert: [] },
  };
  for (let r = 0; r < runs; r++) {
    for (const mode of ["seq", "pipe"] as Mode[]) {
      const all: Kind[] = ["unix", "tls", "cert"];
      const order = [...all.slice(r % 3), ...all.slice(0, r % 3)];
      for (const kind of order) {
        const t = targets[kind];
        results[mode][kind].push(await roundTrips(t.address, t.options, mode, n, warmup));
        if (flag("verbose") !== undefined) console.error(r, mode, kind, results[mode][kind].at(-1));
      }
    }
  }
  const rate = (x: number) => `${num(x)}/s`;
  const row = (figure: string, mode: Mode, kind: Kind): Row => {
    const tls = median(results[mode][kind]);
    const unix = median(results[mode].unix);
    return {
      figure,
      ours: rate(tls),
      baseline: rate(unix),
      ratio: tls / unix,
      target: "report",
      met: undefined,
    };
  };
  const list = (xs: number[]) => `[${xs.map((x) => num(x)).join(" ")}]`;
  emit([
    row("query-status over TLS vs unix, sequential", "seq", "tls"),
    row("  same, with a client certificate (node:tls)", "seq", "cert"),
    row("query-status over TLS vs unix, oob 8 in flight", "pipe", "tls"),
    row("  same, with a client certificate (node:tls)", "pipe", "cert"),
  ], [
    `N=${n} (+${warmup} warm-up) per run, ${runs} runs, order rotating; same QEMU, ` +
    `unix = a second -qmp monitor, TLS = tls-creds-x509 (EC P-256) monitor; ` +
    `ours = TLS, baseline = unix`,
    ...(["seq", "pipe"] as Mode[]).map((m) =>
      `${m}: unix ${list(results[m].unix)} tls ${list(results[m].tls)} ` +
      `tls+cert ${list(results[m].cert)}`
    ),
  ]);
}

if (import.meta.main) await main();
