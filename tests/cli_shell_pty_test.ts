/**
 * The interactive `qmp shell` on a real pseudo-terminal (tmux) against the
 * fake server: it never throws the user out. Typos keep the prompt, odd
 * schema replies and a monitor that never answers `query-qmp-schema` leave
 * a working prompt, and history files that are symlinks, FIFOs or devices
 * are neither followed nor rewritten.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { fakeMonitor } from "./helpers/fake_monitor.ts";
import { hasTmux, type Pane, Tmux } from "./helpers/pty.ts";
import { delay } from "./helpers/qemu.ts";

const QMP_TS = new URL("../scripts/qmp.ts", import.meta.url).pathname;
const PERMS = "--allow-read --allow-write --allow-net --allow-run --allow-env";

function shellCommand(address: string, home: string, extra = ""): string {
  return `env HOME=${home} XDG_STATE_HOME=${home}/state NO_COLOR=1 ` +
    `${Deno.execPath()} run --quiet ${PERMS} ${QMP_TS} shell ${address} ${extra}` +
    `; echo "EXIT=$?"; sleep 60`;
}

async function runQueryStatus(pane: Pane): Promise<void> {
  await pane.type("query-status");
  await pane.keys("Enter");
  await pane.waitFor("the query-status result", (s) => s.includes(`"status": "running"`));
  await pane.waitLast("(QEMU)");
}

const ptyTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !hasTmux(), fn });

ptyTest("interactive shell: a typo prints an error and keeps the prompt", async () => {
  await using server = await fakeMonitor();
  await using tmux = new Tmux("typo");
  const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
  try {
    const pane = await tmux.start(shellCommand(server.address, home, "--no-history"));
    await pane.waitLast("(QEMU)");
    const typos: [string, RegExp][] = [
      [`device_add driver="usb-tablet`, /Error: No closing quotation for "/],
      [`{"execute":"query-status"`, /Error: (Invalid JSON|Unbalanced brackets)/],
      [`x=[1,2`, /Error: Unbalanced brackets/],
    ];
    for (const [line, error] of typos) {
      await pane.type(line);
      await pane.keys("Enter");
      await pane.waitFor(
        `the error for ${line} and a fresh prompt`,
        (s, last) => error.test(s) && last === "(QEMU)" && !s.includes("EXIT="),
      );
    }
    await runQueryStatus(pane);
    await pane.keys("C-d");
    const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
    assert(screen.includes("EXIT=0"), screen);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

ptyTest(
  "interactive shell: a query-qmp-schema that is not a list: a notice, the shell lives",
  async () => {
    await using server = await fakeMonitor({
      "query-qmp-schema": (req, conn) => conn.reply(req, { surprise: "not a list" }),
    });
    await using tmux = new Tmux("schema");
    const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
    try {
      const pane = await tmux.start(shellCommand(server.address, home, "--no-history"));
      await pane.waitFor(
        "the notice",
        (s) => s.includes("no Tab completion: query-qmp-schema returned an object, not a list"),
      );
      await pane.waitLast("(QEMU)");
      await pane.type("query-st");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-st"); // nothing to complete from, no crash
      await pane.keys("C-u");
      await runQueryStatus(pane);
      await pane.type("help");
      await pane.keys("Enter");
      await pane.waitFor(
        "help's error",
        (s, last) => s.includes("Error: this QEMU offers no command list") && last === "(QEMU)",
      );
      await pane.keys("C-d");
      const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
      assert(screen.includes("EXIT=0"), screen);
      assert(!screen.includes("not iterable"), screen);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
);

ptyTest(
  "interactive shell: the prompt comes at once when query-qmp-schema never answers",
  async () => {
    await using server = await fakeMonitor({ "query-qmp-schema": () => {/* never answers */} });
    await using tmux = new Tmux("slow");
    const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
    try {
      const pane = await tmux.start(shellCommand(server.address, home, "--no-history"));
      await pane.waitFor("the banner", (s) => s.includes("Connected to QEMU 7.2.22"), 8_000);
      await pane.waitLast("(QEMU)", 8_000);
      await runQueryStatus(pane);
      // help waits for the schema; Ctrl-C stops waiting and keeps the shell.
      await pane.type("help");
      await pane.keys("Enter");
      await delay(300);
      await pane.keys("C-c");
      await pane.waitFor(
        "help interrupted",
        (s, last) => s.includes("Interrupted (still waiting for the schema") && last === "(QEMU)",
      );
      await pane.keys("C-d");
      const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
      assert(screen.includes("EXIT=0"), screen);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
);
ptyTest(
  "interactive shell: --history that is a symlink, a FIFO or /dev/zero is not followed",
  async () => {
    await using server = await fakeMonitor();
    await using tmux = new Tmux("hist");
    const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
    try {
      const target = `${home}/precious`;
      await Deno.writeTextFile(target, "keep me\n", { mode: 0o644 });
      await Deno.chmod(target, 0o644);
      await Deno.symlink(target, `${home}/link`);
      await Deno.symlink("/dev/zero", `${home}/zero`);
      const mkfifo = await new Deno.Command("mkfifo", { args: [`${home}/fifo`] }).output();
      assert(mkfifo.success, "mkfifo");
      for (const name of ["link", "zero", "fifo"]) {
        const pane = await tmux.start(
          shellCommand(server.address, home, `--history ${home}/${name}`),
        );
        await pane.waitFor(
          `the warning about ${name}`,
          (s) => /warning: history file .* is not a regular file/.test(s),
          8_000,
        );
        await pane.waitLast("(QEMU)", 8_000);
        await runQueryStatus(pane);
        await pane.keys("C-d");
        const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
        assert(screen.includes("EXIT=0"), screen);
      }
      assertEquals(await Deno.readTextFile(target), "keep me\n");
      assertEquals((await Deno.stat(target)).mode! & 0o777, 0o644);
      assert((await Deno.lstat(`${home}/link`)).isSymlink);
      assert((await Deno.lstat(`${home}/zero`)).isSymlink);
      assert((await Deno.lstat(`${home}/fifo`)).isFifo);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
);

ptyTest(
  "interactive shell: a Tab pressed before the schema arrives completes when it does",
  async () => {
    const schema = [
      { name: "0", "meta-type": "object", members: [] },
      { name: "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "0" },
    ];
    await using server = await fakeMonitor({
      "query-qmp-schema": async (req, conn) => {
        await delay(1500);
        await conn.reply(req, schema);
      },
    });
    await using tmux = new Tmux("late");
    const home = await Deno.makeTempDir({ prefix: "qmpkit-pty-home-" });
    try {
      const pane = await tmux.start(shellCommand(server.address, home, "--no-history"));
      await pane.waitLast("(QEMU)", 8_000);
      await pane.type("query-sta");
      await pane.keys("Tab");
      await pane.waitLast("(QEMU) query-status", 8_000);
      await pane.keys("Enter");
      await pane.waitFor("the result", (s) => s.includes(`"status": "running"`));
      await pane.keys("C-d");
      const screen = await pane.waitFor("the exit status", (s) => s.includes("EXIT="));
      assert(screen.includes("EXIT=0"), screen);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
);
