/**
 * The HTML report in a real headless Chromium (Debian's `chromium`, driven
 * over the DevTools protocol by tests/helpers/chromium.ts): the report of a
 * real run (`play.ts --reporter html`) and of merged shards (`merge-reports
 * --reporter html`) loads without any network request, a failure's details
 * (diff, QMP table, console tail, how QEMU died) are hidden until one click on
 * its summary and visible after it (with and without JavaScript), a step named
 * like markup renders as text, and a screenshot is saved in the test's temp
 * dir.
 *
 * Skipped (with a message) only when Chromium is not installed and CI is not
 * set; under CI it must run (scripts/setup.sh installs chromium).
 */
import assert from "node:assert/strict";
import { Chromium, type ChromiumPage, findChromium } from "./helpers/chromium.ts";
import { play, writePlaybook } from "./helpers/play.ts";

const INJECTION = "<img src=x onerror=alert(1)>";

const CHROMIUM = findChromium();
const CI = (Deno.env.get("CI") ?? "") !== "";
const SKIP = CHROMIUM === undefined && !CI;
if (SKIP) {
  console.error(
    "html_chromium_test: SKIPPED: chromium is not installed (apt-get install chromium, or " +
      "scripts/setup.sh); with CI=true this test fails instead of skipping",
  );
}

function chromium(): string {
  if (CHROMIUM === undefined) {
    throw new Error(
      "CI is set but chromium is not installed: run scripts/setup.sh (it installs it)",
    );
  }
  return CHROMIUM;
}

/** A passing playbook and a crash (QEMU killed mid-step) on `-machine none`: no boot. */
async function writeFastPlaybooks(dir: string): Promise<void> {
  await writePlaybook(
    dir,
    "passing",
    `export default playbook({ name: "passing", tags: ["fast"], vm: { machine: "none" } }, async (t) => {
  await t.step("query-status", async () => {
    t.expect((await t.qmp.execute("query-status")).status).toBe("running");
  });
  await t.step("version", async () => {
    await t.step("is 7.x", async () => {
      t.expect((await t.qmp.execute("query-version")).qemu.major).toBe(7);
    });
  });
});`,
  );
  await writePlaybook(
    dir,
    "crash",
    `export default playbook({ name: "crash", vm: { machine: "none" } }, async (t) => {
  await t.step("QEMU is killed", async () => {
    await t.qmp.execute("query-status");
    Deno.kill(t.vm.pid, "SIGKILL");
    await t.qmp.execute("query-status");
  });
});`,
  );
}

/** A failing assertion on the tiny guest (TCG), after it booted: a real console tail. */
async function writeGuestPlaybook(dir: string): Promise<void> {
  await writePlaybook(
    dir,
    "failing",
    `export default playbook({ name: "failing", vm: { guest: "tiny", memory: 128, accel: "tcg" } }, async (t) => {
  await t.step("boots", async () => {
    await t.vm.console.waitFor("QMPKIT-GUEST-READY", { timeout: "150s", signal: t.signal });
  });
  await t.step("pause", async () => {
    await t.step(${JSON.stringify(INJECTION)}, async () => {
      await t.qmp.execute("stop");
      t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "running", running: true });
    });
  });
});`,
  );
}

interface Box {
  visible: boolean;
  width: number;
  height: number;
  text: string;
}

/** Visibility (computed, and a non-empty box) and text of `inner` elements of failure `id`. */
function boxes(
  page: ChromiumPage,
  id: string,
  inner: string[],
): Promise<Record<string, Box | null>> {
  return page.eval(`(() => {
    const d = document.getElementById(${JSON.stringify(id)});
    const out = {};
    for (const sel of ${JSON.stringify(inner)}) {
      const el = d.querySelector(sel);
      if (!el) { out[sel] = null; continue; }
      const r = el.getBoundingClientRect();
      out[sel] = {
        visible: el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true }) &&
          r.width > 0 && r.height > 0,
        width: r.width, height: r.height, text: el.textContent.slice(0, 4000),
      };
    }
    return out;
  })()`);
}

/** The id of the failure whose summary contains `text`. */
async function failureId(page: ChromiumPage, text: string): Promise<string> {
  const id = await page.eval<string | null>(`(() => {
    const d = [...document.querySelectorAll("details.fail")]
      .find((d) => d.querySelector("summary").textContent.includes(${JSON.stringify(text)}));
    return d ? d.id : null;
  })()`);
  assert.ok(id, `a failure whose summary says ${text}`);
  return id;
}

/** Loads the report and checks what every page must satisfy: no fetch, no markup injection. */
async function load(page: ChromiumPage, file: string): Promise<void> {
  await page.goto(`file://${file}`);
  const title = await page.eval<string>("document.title");
  assert.match(title, /^qmpkit report — FAILED/);
  assert.deepEqual(page.requests, [`file://${file}`], "the page fetched nothing but itself");
  assert.deepEqual(page.dialogs, [], "no script ran from the report's data");
}

/** Clicks failure `id`'s summary once and checks `inner` became visible. */
async function oneClickShows(
  page: ChromiumPage,
  id: string,
  inner: string[],
): Promise<Record<string, Box>> {
  const before = await boxes(page, id, inner);
  for (const sel of inner) {
    assert.ok(before[sel], `failure ${id} has ${sel}`);
    assert.equal(before[sel]!.visible, false, `${sel} hidden before the click`);
  }
  await page.click(`#${id} > summary`);
  const after = await boxes(page, id, inner);
  for (const sel of inner) {
    assert.equal(after[sel]!.visible, true, `${sel} visible after one click`);
  }
  return after as Record<string, Box>;
}

async function assertPng(path: string): Promise<void> {
  const png = await Deno.readFile(path);
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], `${path} is a PNG`);
  assert.ok(png.length > 10_000, `${path} has content (${png.length} bytes)`);
}

Deno.test({
  name: "html in Chromium: a real run's report; one click shows the failure's diff, QMP table, " +
    "console tail and how QEMU died",
  ignore: SKIP,
  async fn() {
    const bin = chromium(); // under CI without chromium: fail here, with the reason
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-html-chromium-" });
    try {
      await Deno.mkdir(`${dir}/pb`);
      await writeFastPlaybooks(`${dir}/pb`);
      await writeGuestPlaybook(`${dir}/pb`);
      const r = await play(
        [`${dir}/pb`, "--parallel", "2", "--reporter", "html", "--output", `${dir}/report`],
        { timeoutMs: 240_000, env: { CI: "" } },
      );
      assert.equal(r.code, 1, r.stderr);
      const file = `${dir}/report/index.html`;
      assert.match(r.stderr, new RegExp(`html report: ${file}`));
      assert.equal(r.stdout, "");

      await using browser = await Chromium.launch(bin, dir);
      const page = await browser.newPage();
      await load(page, file);

      // The assertion failure: diff, QMP table and console tail, one click away.
      const id = await failureId(page, "onerror=alert(1)");
      const shown = await oneClickShows(page, id, [".diff", "table.qmp", "pre.console", ".path"]);
      assert.match(shown[".diff"].text, /- {3}running: true,/);
      assert.match(shown[".diff"].text, /\+ {3}status: "paused",/);
      assert.match(
        shown[".path"].text,
        new RegExp(`pause › ${INJECTION.replace(/[()]/g, "\\$&")}`),
      );
      assert.match(shown["table.qmp"].text, /→ sent.*stop/s);
      assert.match(shown["table.qmp"].text, /← received.*event STOP/s);
      assert.match(shown["pre.console"].text, /QMPKIT-GUEST-READY/);

      // The step named like markup is text: no <img> element, no alert.
      assert.equal(await page.eval("document.querySelectorAll('img').length"), 0);
      assert.deepEqual(page.dialogs, []);

      // Each QMP message's JSON opens with one click on its row.
      const jsonBox = async () =>
        await page.eval<boolean>(`(() => {
          const pre = document.querySelector("#${id} table.qmp tbody tr:last-child pre");
          return pre.checkVisibility() && pre.getBoundingClientRect().height > 0 &&
            pre.textContent.includes('"status": "paused"');
        })()`);
      assert.equal(await jsonBox(), false);
      await page.click(`#${id} table.qmp tbody tr:last-child summary`);
      assert.equal(await jsonBox(), true, "the message's JSON is shown after one click");
      await page.screenshot(`${dir}/report.png`);
      await assertPng(`${dir}/report.png`);

      // The crash: how QEMU died, one click away.
      const crash = await failureId(page, "QEMU is killed");
      const died = await oneClickShows(page, crash, [".qemu", "table.qmp"]);
      assert.match(died[".qemu"].text, /How QEMU died\s*QEMU killed by SIGKILL/);
      await page.screenshot(`${dir}/crash.png`, `#${crash}`);
      await assertPng(`${dir}/crash.png`);

      // A red bar of the timeline opens its failure; the status filter hides the rest.
      const linked = await browser.newPage();
      await load(linked, file);
      await linked.click(`#timeline a.s.failed[href="#${id}"]`);
      // The fragment navigation's hashchange handler runs a moment after the click.
      let opened = false;
      for (let i = 0; i < 50 && !opened; i++) {
        opened = (await boxes(linked, id, [".diff"]))[".diff"]!.visible;
        if (!opened) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(
        opened,
        `a click on the red bar opens failure ${id}: ${await linked.eval("location.hash")}`,
      );
      const shownPlaybooks = () =>
        linked.eval<string[]>(
          "[...document.querySelectorAll('details.pb')].filter((d) => d.checkVisibility())" +
            ".map((d) => d.querySelector('.name').textContent).sort()",
        );
      assert.deepEqual(await shownPlaybooks(), ["crash", "failing", "passing"]);
      await linked.click("label:has(#f-failed)");
      assert.deepEqual(await shownPlaybooks(), ["crash", "failing"]);
      await linked.click("label:has(#f-passed)");
      assert.deepEqual(await shownPlaybooks(), ["passing"]);

      // Without JavaScript the same click works (<details>).
      const noJs = await browser.newPage({ javaScript: false });
      await load(noJs, file);
      assert.equal(await noJs.eval("document.getElementById('tools').hidden"), true);
      await oneClickShows(noJs, id, [".diff", "table.qmp", "pre.console"]);

      await browser.close();
      assert.deepEqual(await browser.leftoverPids(), [], "no Chromium process left");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "html in Chromium: merge-reports of two shards' blobs renders one report",
  ignore: SKIP,
  async fn() {
    const bin = chromium(); // under CI without chromium: fail here, with the reason
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-html-chromium-" });
    try {
      await Deno.mkdir(`${dir}/pb`);
      await writeFastPlaybooks(`${dir}/pb`);
      for (const shard of ["1/2", "2/2"]) {
        const r = await play(
          [`${dir}/pb`, "--shard", shard, "--reporter", "blob", "--output", `${dir}/blobs`],
          { timeoutMs: 90_000, env: { CI: "" } },
        );
        assert.ok(r.code === 0 || r.code === 1, r.stderr);
      }
      const m = await play(
        ["merge-reports", `${dir}/blobs`, "--reporter", "html", "--output", `${dir}/report`],
        { timeoutMs: 60_000, env: { CI: "" } },
      );
      assert.equal(m.code, 1, m.stderr);
      const file = `${dir}/report/index.html`;
      assert.match(m.stderr, new RegExp(`html report: ${file}`));

      await using browser = await Chromium.launch(bin, dir);
      const page = await browser.newPage();
      await load(page, file);
      const text = await page.eval<string>("document.body.innerText");
      assert.match(text, /merged from 2 shards/);
      assert.match(text, /1 failed/);
      assert.match(text, /1 passed/);
      const names = await page.eval<string[]>(
        "[...document.querySelectorAll('details.pb .name')].map((e) => e.textContent)",
      );
      assert.deepEqual(names.sort(), ["crash", "passing"]);
      assert.equal(
        await page.eval("document.querySelectorAll('#timeline .lane').length"),
        2,
        "a timeline lane per playbook",
      );
      const crash = await failureId(page, "QEMU is killed");
      await oneClickShows(page, crash, [".qemu", "table.qmp"]);
      await page.screenshot(`${dir}/merged.png`);
      await assertPng(`${dir}/merged.png`);
      await browser.close();
      assert.deepEqual(await browser.leftoverPids(), [], "no Chromium process left");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
