/**
 * Round-trip throughput of `query-status` against a real QEMU (`-machine none`),
 * qmpkit vs a raw Python socket client (bench/raw_baseline.py) in the same run:
 * sequential round trips, and pipelined with oob (8 in-band in flight).
 * Runs alternate (ours, raw, ours, raw, ...) three times. Prints a table only.
 *
 *   deno run --allow-run --allow-read --allow-write --allow-net --allow-env bench/roundtrip.ts [N]
 *
 * @module
 */
import { connect } from "../lib/client.ts";
import { startQemu } from "../tests/helpers/qemu.ts";

const N = Number(Deno.args[0] ?? 5000);
const WARMUP = 500;
const RUNS = 3;
const RAW = new URL("./raw_baseline.py", import.meta.url).pathname;

type Mode = "seq" | "pipe";

async function ours(address: string, mode: Mode): Promise<number> {
  await using qmp = await connect(address, { timeout: "10s", oob: mode === "pipe" });
  const run = async (n: number) => {
    if (mode === "seq") {
      for (let i = 0; i < n; i++) await qmp.execute("query-status");
    } else {
      // The client keeps at most 8 in-band commands in flight and queues the rest.
      await Promise.all(Array.from({ length: n }, () => qmp.execute("query-status")));
    }
  };
  await run(WARMUP);
  const t0 = performance.now();
  await run(N);
  return N / ((performance.now() - t0) / 1000);
}

async function raw(socketPath: string, mode: Mode): Promise<number> {
  const out = await new Deno.Command("python3", {
    args: [RAW, socketPath, String(N), mode, String(WARMUP)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`raw_baseline.py failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text).per_second;
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US").padStart(8);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await using qemu = await startQemu({ machine: "none" });
const results = {
  seq: { ours: [] as number[], raw: [] as number[] },
  pipe: { ours: [] as number[], raw: [] as number[] },
};
for (let run = 0; run < RUNS; run++) {
  for (const mode of ["seq", "pipe"] as Mode[]) {
    // Alternate which goes first so neither always gets the warmer machine.
    if (run % 2 === 0) {
      results[mode].ours.push(await ours(qemu.address, mode));
      results[mode].raw.push(await raw(qemu.socketPath, mode));
    } else {
      results[mode].raw.push(await raw(qemu.socketPath, mode));
      results[mode].ours.push(await ours(qemu.address, mode));
    }
  }
}

const version = new TextDecoder().decode(
  (await new Deno.Command("qemu-system-x86_64", { args: ["--version"] }).output()).stdout,
).split("\n")[0];
console.log(`query-status round trips/s, N=${N} per run (+${WARMUP} warm-up), ${version}`);
console.log(`deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs, -machine none`);
console.log("");
console.log("run    | seq ours | seq raw  | ratio | pipe(oob,8) ours | pipe raw | ratio");
console.log("-------|----------|----------|-------|------------------|----------|------");
const row = (label: string, i?: number) => {
  const pick = (xs: number[]) => (i === undefined ? median(xs) : xs[i]);
  const so = pick(results.seq.ours), sr = pick(results.seq.raw);
  const po = pick(results.pipe.ours), pr = pick(results.pipe.raw);
  console.log(
    `${label.padEnd(6)} | ${fmt(so)} | ${fmt(sr)} | ${(so / sr).toFixed(2).padStart(5)} | ` +
      `${fmt(po).padStart(16)} | ${fmt(pr)} | ${(po / pr).toFixed(2).padStart(5)}`,
  );
};
for (let i = 0; i < RUNS; i++) row(String(i + 1), i);
row("median");
