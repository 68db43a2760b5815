/**
 * `qomTree(qmp, "/", { props: true })` on a `-machine pc -S` VM (TCG): the
 * whole composition tree with every property value, one command at a time
 * (`concurrency: 1`, as QEMU's `qom-tree` script walks) vs many in flight.
 * Rounds interleave the settings (1, 8, 32, 128, 1, 8, ...); medians.
 * Twice: on the VM's own socket, and through a local proxy that delays every
 * chunk by 0.5 ms each way (timer granularity makes it more: the sequential
 * row shows the real per-command round trip), as over ssh or a LAN, where the
 * round trips, not QEMU, dominate. Prints only; never asserts.
 *
 *   deno run -A bench/qom_tree.ts [--iters=7] [--json]
 *
 * @module
 */
import { connect, type QmpClient } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import { type QomNode, qomTree } from "../lib/qom.ts";
import { median, num } from "./main.ts";

const iters = Number(Deno.args.find((a) => a.startsWith("--iters="))?.slice(8) ?? 7);
const settings = [1, 8, 32, 128];

function count(node: QomNode): { objects: number; props: number } {
  let objects = 0;
  let props = 0;
  const stack = [node];
  while (stack.length) {
    const n = stack.pop()!;
    objects++;
    props += n.properties?.length ?? 0;
    stack.push(...n.children);
  }
  return { objects, props };
}

/** A unix-socket proxy to `target` that delays each chunk by `ms` in both directions. */
function delayProxy(target: string, path: string, ms: number): Deno.Listener {
  const listener = Deno.listen({ transport: "unix", path });
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    let chain = Promise.resolve();
    try {
      for await (const chunk of from.readable) {
        const due = performance.now() + ms;
        chain = chain.then(async () => {
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await to.write(chunk);
        });
      }
    } catch { /* closed */ }
    await chain.catch(() => {});
    try {
      to.close();
    } catch { /* closed */ }
  };
  (async () => {
    for await (const conn of listener) {
      const upstream = await Deno.connect({ transport: "unix", path: target });
      pipe(conn, upstream);
      pipe(upstream, conn);
    }
  })().catch(() => {});
  return listener;
}

const tmp = Deno.makeTempDirSync({ prefix: "qmpkit-bench-" });
await using vm = await launch({
  machine: "pc",
  paused: true,
  accel: "tcg",
  args: [
    "-nodefaults",
    "-qmp",
    `unix:${tmp}/second.sock,server=on,wait=off`,
  ],
});
const second = vm.commandLine.find((a) => a.endsWith("/second.sock,server=on,wait=off"))!
  .slice(5, -",server=on,wait=off".length);
const proxyPath = `${vm.dir}/proxy.sock`;
const proxy = delayProxy(second, proxyPath, 0.5);
const slow = await connect(`unix:${proxyPath}`, { retry: true });

async function measure(qmp: QmpClient, label: string, rounds: number): Promise<void> {
  const times = new Map<number, number[]>(settings.map((s) => [s, []]));
  let size = { objects: 0, props: 0 };
  await qomTree(qmp, "/", { props: true }); // warm-up
  for (let i = 0; i < rounds; i++) {
    for (const c of settings) {
      const t0 = performance.now();
      const tree = await qomTree(qmp, "/", { props: true, concurrency: c });
      times.get(c)!.push(performance.now() - t0);
      size = count(tree);
    }
  }
  const seq = median(times.get(1)!);
  const rows = settings.map((c) => ({
    concurrency: c,
    medianMs: Math.round(median(times.get(c)!)),
    speedup: Math.round((seq / median(times.get(c)!)) * 10) / 10,
  }));
  if (Deno.args.includes("--json")) {
    console.log(JSON.stringify({ label, ...size, commands: size.objects + size.props, rows }));
    return;
  }
  console.log(
    `qomTree("/", { props: true }) on -machine pc -S, ${label}: ${num(size.objects)} objects, ` +
      `${num(size.props)} properties (${num(size.objects + size.props)} commands); ` +
      `median of ${rounds}`,
  );
  for (const r of rows) {
    console.log(
      `  concurrency ${String(r.concurrency).padStart(3)}: ${
        String(r.medianMs).padStart(5)
      } ms  (${r.speedup}× vs 1)`,
    );
  }
}

try {
  await measure(vm.qmp, "direct unix socket", iters);
  await measure(slow, "via a delaying proxy", Math.max(1, Math.ceil(iters / 2)));
} finally {
  await slow.close();
  proxy.close();
  Deno.removeSync(tmp, { recursive: true });
}
