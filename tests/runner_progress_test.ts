/**
 * Progress on long runs: on a terminal (a real pty through tmux) a status
 * line with playbooks done / running / failed and the elapsed time is
 * redrawn in place and cleared at the end; with `CI` set, or through pipes
 * (`NO_COLOR`), plain progress lines instead, without control sequences.
 */
import assert from "node:assert/strict";
import { play, ROOT, withDir, writePlaybook } from "./helpers/play.ts";
import { hasTmux, Tmux } from "./helpers/pty.ts";

const PERMS = "--allow-read --allow-write --allow-net --allow-run --allow-env";

async function writeSlow(dir: string): Promise<void> {
  for (const name of ["one", "two"]) {
    await writePlaybook(
      dir,
      name,
      `export default playbook({ name: "${name}", vm: { machine: "none" } }, async (t) => {
  await t.step("waits", () => t.sleep("1200ms"));
});`,
    );
  }
}

/** Runs play in a tmux pane with `env` and returns what the screen showed while running and at the end. */
async function onTerminal(dir: string, name: string, env: string, args = "") {
  const tmux = new Tmux(name);
  try {
    const pane = await tmux.start(
      `cd ${ROOT} && env -u NO_COLOR -u CI ${env} ${Deno.execPath()} run --no-check ${PERMS} ` +
        `scripts/play.ts ${dir} ${args}; echo "EXIT=$?"; sleep 60`,
    );
    const screens: string[] = [];
    const end = await pane.waitFor(
      "the exit status",
      (s) => {
        screens.push(s);
        return /EXIT=\d+/.test(s);
      },
      45_000,
      true,
    );
    return { screens, end };
  } finally {
    await tmux.killServer();
  }
}

Deno.test({
  name: "on a terminal: a live status line (done / running / failed, elapsed), redrawn in place",
  ignore: !hasTmux(),
  async fn() {
    await withDir(async (dir) => {
      await writeSlow(dir);
      const { screens, end } = await onTerminal(dir, "progress-tty", "");
      assert.match(end, /EXIT=0/);
      const live = /\d\/2 done · \d running · 0 failed · [\d.]+m?s/g;
      const during = screens.filter((s) => (s.match(live) ?? []).length > 0);
      assert.ok(during.length > 0, `no status line seen:\n${screens.at(-1)}`);
      for (const s of during) {
        assert.ok(
          (s.match(live) ?? []).length <= 1,
          `the status line is redrawn, not appended:\n${s}`,
        );
      }
      assert.ok(during.some((s) => /1 running/.test(s)), "shows the running playbook");
      assert.doesNotMatch(end, /done · /, "the status line is cleared at the end");
      assert.doesNotMatch(end, /\[\d\/2 done/, "no plain progress lines on a terminal");
      assert.match(end, /ok \| 2 passed, 0 failed playbooks/);
    });
  },
});

Deno.test({
  name: "on a terminal with a stdout report: the status line on stderr, the report intact",
  ignore: !hasTmux(),
  async fn() {
    await withDir(async (dir) => {
      await writeSlow(dir);
      const { screens, end } = await onTerminal(
        dir,
        "progress-json",
        "",
        `--reporter json > ${dir}/report.json`,
      );
      assert.match(end, /EXIT=0/);
      assert.ok(screens.some((s) => /\d\/2 done · \d running · 0 failed/.test(s)), screens.at(-1));
      assert.doesNotMatch(end, /done · /);
      const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
      assert.equal(report.counts.playbooks.passed, 2);
    });
  },
});

Deno.test({
  name: "on a terminal with CI set: plain progress lines, no live line",
  ignore: !hasTmux(),
  async fn() {
    await withDir(async (dir) => {
      await writeSlow(dir);
      const { end } = await onTerminal(dir, "progress-ci", "CI=true");
      assert.match(end, /EXIT=0/);
      assert.match(end, /^\[1\/2 done · 0 running · 0 failed · [\d.]+m?s\]$/m);
      assert.match(end, /^\[2\/2 done · 0 running · 0 failed · [\d.]+m?s\]$/m);
    });
  },
});

Deno.test("through pipes (NO_COLOR): plain progress lines without control sequences", async () => {
  await withDir(async (dir) => {
    await writePlaybook(
      dir,
      "fails",
      `export default playbook({ name: "fails", vm: { machine: "none" } }, async (t) => {
  await t.step("no", () => t.expect(1).toBe(2));
});`,
    );
    await writePlaybook(
      dir,
      "passes",
      `export default playbook({ name: "passes", vm: { machine: "none" } }, async (t) => {
  await t.step("yes", () => {});
});`,
    );
    const r = await play([dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^\[1\/2 done · 0 running · 1 failed · [\d.]+m?s\]$/m);
    assert.match(r.stderr, /^\[2\/2 done · 0 running · 1 failed · [\d.]+m?s\]$/m);
    assert.ok(!r.stderr.includes("\r") && !r.stderr.includes("\x1b["), "no redraws or colours");
    // A single playbook needs no progress line.
    const one = await play([`${dir}/passes.playbook.ts`]);
    assert.doesNotMatch(one.stderr, /done · /);
  });
});
