/**
 * `qmp shell` on a real pseudo-terminal (tmux): Tab completion from the live
 * schema, the candidate list on Tab Tab, events printed without garbling the
 * input line, history (Up) within and across sessions, HMP mode, the TRANS>
 * prompt, Ctrl-C and Ctrl-D. The tmux server is private to this test and
 * always killed, as is QEMU.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { connect } from "../mod.ts";
import { startQemuForClients } from "./helpers/qemu.ts";
import { hasTmux, Tmux } from "./helpers/pty.ts";

const QMP_TS = new URL("../scripts/qmp.ts", import.meta.url).pathname;
const PERMS = "--allow-read --allow-write --allow-net --allow-run --allow-env";

Deno.test({
  name: "qmp shell on a terminal: completion, events, history, HMP and transaction modes",
  ignore: !hasTmux(),
  async fn() {
    const home = await Deno.makeTempDir({ prefix: "qmpkit-cli-home-" });
    const second = `${home}/second.sock`;
    await using qemu = await startQemuForClients({
      machine: "pc",
      paused: true,
      extraArgs: ["-device", "qemu-xhci", "-qmp", `unix:${second},server=on,wait=off`],
    });
    await using other = await connect(`unix:${second}`, { retry: true, timeout: "10s" });
    const shell = `env HOME=${home} XDG_STATE_HOME=${home}/state NO_COLOR=1 ` +
      `${Deno.execPath()} run --quiet ${PERMS} ${QMP_TS} shell ${qemu.address}` +
      `; echo "EXIT=$?"; sleep 60`;
    const tmux = new Tmux("cli-test");
    try {
      const pane = await tmux.start(shell);
      await pane.waitFor("the banner", (s) => s.includes("Tab completes"));
      await pane.waitLast("(QEMU)");

      // Tab completes a command name from the schema.
      await pane.type("query-statu");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-status");
      await pane.keys("Enter");
      await pane.waitFor("the result", (s) => s.includes(`"status": "prelaunch"`));
      await pane.waitLast("(QEMU)");

      // Argument names, then run it.
      await pane.type("device_add dr");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) device_add driver=");
      await pane.type("usb-tablet id=t0");
      await pane.keys("Enter");
      await pane.waitFor("{}", (s) => s.split("\n").some((l) => l === "{}"));
      const peripherals = await other.executeRaw("qom-list", { path: "/machine/peripheral" });
      assert((peripherals as { name: string }[]).some((p) => p.name === "t0"));

      // Ambiguous: the common prefix, then the candidates on Tab Tab.
      await pane.type("query-sta");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-stat");
      await pane.keys("Tab");
      await pane.waitFor("the candidate list", (s) => s.includes("query-stats-schemas"));
      await pane.waitLast("(QEMU) query-stat");
      await pane.keys("C-u");
      await pane.waitLast("(QEMU)");

      // An event arriving while a line is half typed: printed above, input kept.
      await pane.type("query-na");
      await pane.waitLast("(QEMU) query-na");
      await other.executeRaw("cont");
      const screen = await pane.waitFor(
        "the RESUME event above the prompt",
        (s, last) => s.includes("event RESUME") && last === "(QEMU) query-na",
      );
      const rows = screen.split("\n");
      assert(/^\[\d\d:\d\d:\d\d\.\d{3}\] event RESUME$/.test(rows[rows.length - 2]), screen);
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-name");
      await pane.keys("Enter");
      await pane.waitLast("(QEMU)");

      // History: Up recalls, Up again goes further back.
      await pane.keys("Up");
      await pane.waitLast("(QEMU) query-name");
      await pane.keys("Up");
      await pane.waitLast("(QEMU) device_add driver=usb-tablet id=t0");
      await pane.keys("Down");
      await pane.waitLast("(QEMU) query-name");
      // Ctrl-C discards the line.
      await pane.keys("C-c");
      await pane.waitFor(
        "^C and a fresh prompt",
        (s, last) => s.includes("^C") && last === "(QEMU)",
      );

      // HMP mode with its own completion.
      await pane.type("hmp");
      await pane.keys("Enter");
      await pane.waitLast("(HMP)");
      await pane.type("info statu");
      await pane.keys("Tab");
      await pane.waitLast("(HMP) info status");
      await pane.keys("Enter");
      await pane.waitFor("HMP output", (s) => s.includes("VM status: running"));
      await pane.type("qmp");
      await pane.keys("Enter");
      await pane.waitLast("(QEMU)");

      // A multi-line transaction at the TRANS> prompt.
      await pane.type("transaction(");
      await pane.keys("Enter");
      await pane.waitLast("TRANS>");
      await pane.type("ab");
      await pane.keys("Tab");
      await pane.waitLast("TRANS> abort");
      await pane.keys("Enter");
      await pane.waitLast("TRANS>");
      await pane.type(")");
      await pane.keys("Enter");
      await pane.waitFor(
        "the transaction's error",
        (s, last) =>
          s.includes("Error: Transaction aborted using Abort action") && last === "(QEMU)",
      );

      // Ctrl-D on an empty line leaves with status 0.
      await pane.keys("C-d");
      await pane.waitFor("the exit status", (s) => s.includes("EXIT=0"));
      const history = (await Deno.readTextFile(`${home}/state/qmpkit/history`)).split("\n");
      assertEquals(history, [
        "query-status",
        "device_add driver=usb-tablet id=t0",
        "query-name",
        "hmp",
        "info status",
        "qmp",
        "transaction(",
        "abort",
        ")",
        "",
      ]);

      // History survives across sessions.
      const pane2 = await tmux.start(shell);
      await pane2.waitLast("(QEMU)");
      await pane2.keys("Up");
      await pane2.waitLast("(QEMU) )");
      await pane2.keys("Up", "Up", "Up");
      await pane2.waitLast("(QEMU) qmp");
      await pane2.keys("C-u", "C-d");
      await pane2.waitFor("the exit status", (s) => s.includes("EXIT=0"));
    } finally {
      await tmux.killServer();
      await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  },
});
