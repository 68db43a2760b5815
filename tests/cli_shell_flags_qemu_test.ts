/**
 * `qmp shell` with qemu qmp-shell's flags against real QEMU, through the real
 * CLI: `-N` (skip negotiation: QEMU stays in capabilities negotiation mode
 * until the user's own `qmp_capabilities`), with `-v`, `-l`, `-p`, `-H`; `-N`
 * on a socket that never greets (a guest agent) is one bounded error line;
 * the interactive `-N` shell completes commands once negotiated (tmux).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { qmp, show } from "./helpers/cli.ts";
import { hasTmux, Tmux } from "./helpers/pty.ts";
import { startQemuForClients } from "./helpers/qemu.ts";
import { startFakeAgent } from "./helpers/fake_agent.ts";

const NEGOTIATE_FIRST = "Expecting capabilities negotiation with 'qmp_capabilities'";

Deno.test("qmp shell -N: nothing negotiated until the user's qmp_capabilities (-v, -l)", async () => {
  await using q = await startQemuForClients({ machine: "none" });
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-shell-n-" });
  try {
    const input = "query-status\nqmp_capabilities\nquery-status\n";
    const r = await qmp(["shell", "-N", "-v", "-l", `${dir}/log`, "--keep-going", q.address], {
      stdin: input,
    });
    assertEquals(r.code, 1, show(r)); // the first line failed
    // -v echoes exactly what was sent: the shell sent no qmp_capabilities of its own.
    const echoed = r.stderr.split("\n").filter((l) => l.startsWith("{"));
    assertEquals(echoed, [
      `{"execute":"query-status"}`,
      `{"execute":"qmp_capabilities"}`,
      `{"execute":"query-status"}`,
    ]);
    assert(r.stderr.includes(`line 1: error: ${NEGOTIATE_FIRST} (CommandNotFound)`), show(r));
    const results = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(results[0], {});
    assertEquals(results[1].status, "running");
    const log = (await Deno.readTextFile(`${dir}/log`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assertEquals(log.map((l) => [l.execute, l.error?.class ?? "ok"]), [
      ["query-status", "CommandNotFound"],
      ["qmp_capabilities", "ok"],
      ["query-status", "ok"],
    ]);

    // The long spelling, and the contrast: without -N the shell has negotiated already.
    const long = await qmp(["shell", "--skip-negotiation", q.address], { stdin: "query-status\n" });
    assertEquals(long.code, 1, show(long));
    assert(long.stderr.includes(NEGOTIATE_FIRST), show(long));
    const normal = await qmp(["shell", q.address], { stdin: "qmp_capabilities\n" });
    assertEquals(normal.code, 1, show(normal));
    assert(/Capabilities negotiation is already complete/.test(normal.stderr), show(normal));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qmp shell -N -H -p: HMP after a typed qmp_capabilities, pretty JSON", async () => {
  await using q = await startQemuForClients({ machine: "none" });
  // -H starts in HMP mode; "qmp" switches back, as in the interactive shell.
  const r = await qmp(["shell", "-N", "-p", q.address], {
    stdin: "qmp_capabilities\nquery-status\nhmp info version\n",
  });
  assertEquals(r.code, 0, show(r));
  assert(r.stdout.startsWith('{}\n{\n  "status": "running",\n'), show(r));
  assert(/\n7\.2\.\d+/.test(r.stdout), show(r));
  const h = await qmp(["shell", "-N", "-H", q.address], { stdin: "info version\n" });
  assertEquals(h.code, 1, show(h)); // HMP goes through human-monitor-command: not negotiated yet
  assert(h.stderr.includes(NEGOTIATE_FIRST), show(h));
});

Deno.test("qmp shell -N on a socket that never greets (qemu-ga): one line, bounded, names --agent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-shell-n-" });
  const listener = Deno.listen({ transport: "unix", path: `${dir}/silent.sock` });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const c of listener) held.push(c);
    } catch { /* closed */ }
  })();
  try {
    const t0 = performance.now();
    const r = await qmp(["shell", "-N", `${dir}/silent.sock`, "--connect-timeout", "1s"], {
      stdin: "guest-ping\n",
    });
    const ms = performance.now() - t0;
    assertEquals(r.code, 1, show(r));
    assertEquals(r.stderr.trim().split("\n").length, 1, show(r));
    assert(/greeting.*use qmp shell --agent -N/.test(r.stderr), show(r));
    assert(ms < 15_000, `took ${ms} ms`);
  } finally {
    listener.close();
    await accepting;
    for (const c of held) c.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qmp shell --agent -N: qemu's qmp-shell -N for qemu-ga carries over", async () => {
  const info = {
    version: "7.2.0",
    supported_commands: [{ name: "guest-ping", enabled: true, "success-response": true }],
  };
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-ping"
      ? { return: {} }
      : req.execute === "guest-info"
      ? { return: info }
      : { error: { class: "CommandNotFound", desc: "no" } }
  );
  const r = await qmp(["shell", "--agent", "-N", agent.address], { stdin: "guest-ping\n" });
  assertEquals([r.code, r.stdout], [0, "{}\n"], show(r));
});

Deno.test({
  name: "interactive qmp shell -N: a notice, then Tab completes once qmp_capabilities ran",
  ignore: !hasTmux(),
  async fn() {
    await using q = await startQemuForClients({ machine: "none" });
    await using tmux = new Tmux("skipneg");
    const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
    const qmpTs = new URL("../scripts/qmp.ts", import.meta.url).pathname;
    try {
      const pane = await tmux.start(
        `env HOME=${home} NO_COLOR=1 ${Deno.execPath()} run --quiet --allow-read --allow-write ` +
          `--allow-net --allow-run --allow-env ${qmpTs} shell -N --no-history ${q.address}` +
          `; echo "EXIT=$?"; sleep 60`,
      );
      await pane.waitFor("the -N notice", (s) => s.includes("Capabilities not negotiated (-N)"));
      await pane.waitLast("(QEMU)");
      await pane.type("query-status");
      await pane.keys("Enter");
      await pane.waitFor("QEMU's refusal", (s) => s.includes(NEGOTIATE_FIRST));
      await pane.type("qmp_capabilities");
      await pane.keys("Enter");
      await pane.waitFor("the {} reply", (s, last) => s.includes("{}") && last === "(QEMU)");
      await pane.type("query-vers");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-version");
      await pane.keys("Enter");
      await pane.waitFor("the version", (s) => s.includes(`"major": 7`));
      await pane.keys("C-d");
      const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
      assert(screen.includes("EXIT=0"), screen);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});
