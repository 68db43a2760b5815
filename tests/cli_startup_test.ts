/**
 * What a one-shot `qmp exec` loads (issue 19: CLI start-up): it never reads
 * the global `setTimeout`/`clearTimeout`, whose first read in Deno 2.9 loads
 * the Node-compatible timers (~7 ms of a ~40 ms run); its deadlines use
 * lib/runtime_timer.ts. Unix and TCP addresses, with and without --timeout.
 */
import assert from "node:assert/strict";
import { FAKE_STATUS, fakeMonitor } from "./helpers/fake_monitor.ts";
import { PERMS, runDeno, show } from "./helpers/cli.ts";

const QMP_TS = new URL("../scripts/qmp.ts", import.meta.url).pathname;
const TRAP = new URL("./fixtures/node_timer_trap.ts", import.meta.url).pathname;

/** A loopback TCP port that forwards each connection to the unix socket at `path`. */
function tcpToUnix(path: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pipes: Promise<unknown>[] = [];
  const accepting = (async () => {
    for await (const tcp of listener) {
      const unix = await Deno.connect({ transport: "unix", path });
      pipes.push(
        Promise.allSettled([
          tcp.readable.pipeTo(unix.writable),
          unix.readable.pipeTo(tcp.writable),
        ]),
      );
    }
  })();
  return {
    address: `127.0.0.1:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(pipes);
    },
  };
}

Deno.test("qmp exec: connect, negotiate and run a command without loading Node's timers", async () => {
  await using server = await fakeMonitor();
  await using tcp = tcpToUnix(server.path);
  for (
    const argv of [
      ["exec", server.address, "query-status"],
      ["exec", server.path, "query-status", "--timeout", "10s"],
      ["exec", tcp.address, "query-status"],
      ["exec", tcp.address, "query-status", "--timeout", "10s", "--connect-timeout", "5s"],
    ]
  ) {
    const r = await runDeno(QMP_TS, argv, { flags: ["--quiet", "--preload", TRAP, ...PERMS] });
    assert.equal(r.code, 0, `${argv.join(" ")}: ${show(r)}`);
    assert.deepEqual(JSON.parse(r.stdout), FAKE_STATUS);
    assert.equal(r.stderr, "", `${argv.join(" ")}: ${show(r)}`);
  }
});
