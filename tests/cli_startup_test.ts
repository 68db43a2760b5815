/**
 * What a one-shot `qmp exec` loads (issue 19: CLI start-up): it never reads
 * the global `setTimeout`/`clearTimeout`, whose first read in Deno 2.9 loads
 * the Node-compatible timers (~7 ms of a ~40 ms run); its deadlines use
 * lib/timer_lanes.ts. Unix and TCP addresses, with and without --timeout.
 * And the module graph Deno loads at start-up (static imports and literal
 * dynamic ones, which Deno reads and parses before the first line runs) holds
 * no subcommand module but `exec`'s, no launcher, no key=value parsers.
 * The modules `exec` runs (static imports only) hold none of the library
 * modules a plain unix/TCP connection never uses (fd passing, schema,
 * reconnection): the library imports those where they are first needed.
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

/**
 * The modules `deno run ROOT` reads before ROOT runs: code imports, static
 * and literal dynamic (`deno info --json`), not type-only ones. With
 * `staticOnly`, the modules it evaluates before ROOT runs: static imports only.
 */
async function startupGraph(root: string, staticOnly = false): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(root, import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const visit = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (d.code && !(staticOnly && d.isDynamic)) visit(d.code.specifier);
    }
  };
  visit(info.roots[0]);
  const base = new URL("../", import.meta.url).href;
  return new Set([...seen].map((s) => s.replace(base, "")));
}

const SUBCOMMANDS = ["shell", "exec", "info", "events", "agent", "qom", "run"].map(
  (c) => `scripts/cli/${c}.ts`,
);

Deno.test("qmp start-up graph: exec, no other subcommand, no launcher, no parsers", async () => {
  const main = await startupGraph("../scripts/qmp.ts");
  // exec, the one-shot command, is a static import (a dynamic one costs it ~0.5 ms).
  assert.ok(main.has("scripts/cli/exec.ts"), [...main].join(" "));
  assert.ok(main.has("lib/connect.ts"), [...main].join(" "));
  const others = SUBCOMMANDS.filter((c) => !c.endsWith("/exec.ts"));
  // Imported when needed: the key=value parsers (arguments given), the launcher's target
  // and signal handling (--launch).
  const onDemand = ["args", "launch_target", "signals"].map((c) => `scripts/cli/${c}.ts`);
  for (const m of [...others, "lib/machine.ts", ...onDemand]) {
    assert.ok(!main.has(m), `scripts/qmp.ts loads ${m} at start-up`);
  }
});

/** Library modules a plain unix/TCP `qmp exec` never runs; each is imported where first used. */
const LAZY_LIB = [
  "lib/fd_passing.ts", // the first command with `fds`
  "lib/libc_ffi.ts",
  "lib/transports/unix_fd.ts", // connect(..., { fdPassing: true })
  "lib/qapi/schema.ts", // client.schema(), validate: true
  "lib/reconnect.ts", // a dropped connection with a reconnect policy
];

Deno.test("qmp exec runs no fd passing, schema or reconnection module", async () => {
  const exec = await startupGraph("../scripts/qmp.ts", true);
  assert.ok(exec.has("lib/qmp_client.ts") && exec.has("lib/connect.ts"), [...exec].join(" "));
  for (const m of LAZY_LIB) assert.ok(!exec.has(m), `qmp exec evaluates ${m} at start-up`);
  // Still reachable (literal import() specifiers: analysable, published with the package).
  const read = await startupGraph("../scripts/qmp.ts");
  for (const m of LAZY_LIB) assert.ok(read.has(m), `${m} is no longer reachable from qmp exec`);
});
