/**
 * Stop signals reach the CLI commands the way users send them, and every one
 * of them still cleans up: `deno task play` on a real terminal (tmux), where
 * one Ctrl-C arrives twice (the task runner forwards SIGINT and the terminal
 * sends it to the process group too); SIGTERM to the runner; SIGINT to
 * `qmp shell --launch` / `qmp exec --launch` in batch mode. Each run gets a
 * private TMPDIR, so "no temp dir left" is exact even with other tests
 * running alongside.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { onStopSignals, type StopSignal } from "../scripts/cli/signals.ts";
import { hasTmux, type Pane, Tmux } from "./helpers/pty.ts";
import { pidExists } from "./helpers/process.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PLAY = fileURLToPath(new URL("../scripts/play.ts", import.meta.url));
const QMP = fileURLToPath(new URL("../scripts/qmp.ts", import.meta.url));
const PLAYBOOK_URL = new URL("../lib/runner/playbook.ts", import.meta.url).href;
const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

Deno.test("onStopSignals: copies within the window are one; a later signal forces once", () => {
  const listeners = new Map<StopSignal, () => void>();
  let now = 0;
  const calls: string[] = [];
  const stop = onStopSignals({
    stop: (s) => calls.push(`stop ${s}`),
    force: (s) => calls.push(`force ${s}`),
  }, {
    windowMs: 1000,
    now: () => now,
    addListener: (s, fn) => listeners.set(s, fn),
    removeListener: (s) => listeners.delete(s),
  });
  const send = (s: StopSignal, at: number) => {
    now = at;
    listeners.get(s)!();
  };
  assert.equal(stop.received, undefined);
  send("SIGINT", 0);
  send("SIGINT", 3); // deno task's forwarded copy
  send("SIGTERM", 999); // any stop signal within the window is the same request
  assert.deepEqual(calls, ["stop SIGINT"]);
  assert.equal(stop.received, "SIGINT");
  send("SIGINT", 1000);
  send("SIGINT", 5000);
  assert.deepEqual(calls, ["stop SIGINT", "force SIGINT"]);
  stop.dispose();
  assert.equal(listeners.size, 0);
  stop.dispose(); // idempotent
});

/** A work dir (playbooks, markers) and an empty TMPDIR for the command under test. */
async function withDirs(fn: (work: string, tmp: string) => Promise<void>): Promise<void> {
  const work = await Deno.makeTempDir({ prefix: "qmpkit-signals-test-" });
  const tmp = `${work}/tmp`;
  await Deno.mkdir(tmp);
  try {
    await fn(work, tmp);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/**
 * Starts `deno task play FILE` in a tmux pane (TMPDIR=`tmp`; the shell echoes `EXIT=<status>`
 * after it) and waits for the playbook to print QEMU's pid.
 */
async function playInPane(
  tmux: Tmux,
  tmp: string,
  file: string,
): Promise<{ pane: Pane; pid: string }> {
  const pane = await tmux.start(
    `cd ${ROOT} && env TMPDIR=${tmp} NO_COLOR=1 ${Deno.execPath()} task play ${file}` +
      `; echo "EXIT=$?"; sleep 60`,
  );
  const [, pid] = (await pane.waitFor(
    "QEMU's pid",
    (s) => /QEMU-PID \d+/.test(s),
    30_000,
    true,
  ))
    .match(/QEMU-PID (\d+)/)!;
  return { pane, pid };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

/** A playbook whose step waits until interrupted, with a cleanup that writes `marker`. */
function waitingPlaybook(marker: string, cleanupExtra = ""): string {
  return `import { playbook } from "${PLAYBOOK_URL}";
export default playbook({ name: "waits", vm: { machine: "pc", paused: true, memory: 64 } }, async (t) => {
  t.cleanup(async () => {
    const s = await t.qmp.execute("query-status");
    await Deno.writeTextFile(${JSON.stringify(marker)}, "cleanup " + s.status);
    ${cleanupExtra}
  });
  await t.step("waits", async () => {
    console.error("QEMU-PID " + t.vm.pid);
    await t.qmp.waitEvent("RESET", { signal: t.signal });
  });
});
`;
}

/** A spawned CLI process with its output collected as it arrives. */
class Proc {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly done: Promise<Deno.CommandStatus>;

  constructor(args: string[], env: Record<string, string>, stdin: "piped" | "null" = "null") {
    this.child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const d = new TextDecoder();
      for await (const chunk of stream) this[key] += d.decode(chunk, { stream: true });
    };
    const child = this.child;
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 60_000);
    this.done = (async () => {
      const [status] = await Promise.all([
        child.status,
        pump(child.stdout, "stdout"),
        pump(child.stderr, "stderr"),
      ]);
      clearTimeout(timer);
      return status;
    })();
  }

  async waitFor(key: "stdout" | "stderr", pattern: RegExp, ms = 30_000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const m = this[key].match(pattern);
      if (m) return m;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`${key} never matched ${pattern}:\n${this.stdout}\n${this.stderr}`);
  }
}

Deno.test({
  name: "deno task play on a terminal: one Ctrl-C (two SIGINTs) runs cleanups, prints the " +
    "summary, exits 130, leaves no temp dir",
  ignore: !hasTmux(),
  async fn() {
    await withDirs(async (work, tmp) => {
      const marker = `${work}/cleanup.txt`;
      const file = `${work}/waits.playbook.ts`;
      await Deno.writeTextFile(file, waitingPlaybook(marker));
      const tmux = new Tmux("play-sigint");
      try {
        const { pane, pid } = await playInPane(tmux, tmp, file);
        await pane.keys("C-c");
        const screen = await pane.waitFor(
          "the exit status",
          (s) => /EXIT=\d+/.test(s),
          30_000,
          true,
        );
        assert.match(screen, /EXIT=130/);
        assert.doesNotMatch(screen, /Killing VMs/, "one Ctrl-C was taken for two");
        assert.equal((screen.match(/Interrupted: aborting steps/g) ?? []).length, 1, screen);
        assert.match(screen, /1 interrupted playbooks .*\(interrupted by Ctrl-C\)/, screen);
        assert.equal(await readIfExists(marker), "cleanup prelaunch", screen);
        assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
        assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
      } finally {
        await tmux.killServer();
      }
    });
  },
});

Deno.test({
  name: "deno task play on a terminal: a second Ctrl-C after the window kills at once",
  ignore: !hasTmux(),
  async fn() {
    await withDirs(async (work, tmp) => {
      const marker = `${work}/cleanup.txt`;
      const file = `${work}/waits.playbook.ts`;
      await Deno.writeTextFile(
        file,
        waitingPlaybook(
          marker,
          `console.error("CLEANUP-SLOW"); await new Promise((r) => setTimeout(r, 30_000));
    console.error("CLEANUP-END");`,
        ),
      );
      const tmux = new Tmux("play-sigint2");
      try {
        const { pane, pid } = await playInPane(tmux, tmp, file);
        await pane.keys("C-c");
        await pane.waitFor("the slow cleanup", (s) => s.includes("CLEANUP-SLOW"), 30_000, true);
        await new Promise((r) => setTimeout(r, 1500)); // past the 1 s window
        const t0 = Date.now();
        await pane.keys("C-c");
        const screen = await pane.waitFor(
          "the exit status",
          (s) => /EXIT=\d+/.test(s),
          30_000,
          true,
        );
        // The interrupted cleanup alone would have run for its 10 s limit.
        assert.ok(Date.now() - t0 < 6000, `took ${Date.now() - t0} ms:\n${screen}`);
        assert.match(screen, /Killing VMs\./);
        assert.match(screen, /EXIT=130/);
        assert.doesNotMatch(screen, /CLEANUP-END/);
        assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
        assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
      } finally {
        await tmux.killServer();
      }
    });
  },
});

Deno.test("SIGTERM to the runner: cleanups, report, exit 143, no temp dir", async () => {
  await withDirs(async (work, tmp) => {
    const marker = `${work}/cleanup.txt`;
    const file = `${work}/waits.playbook.ts`;
    await Deno.writeTextFile(file, waitingPlaybook(marker));
    const p = new Proc(["run", ...PERMS, PLAY, file, "--reporter", "json"], { TMPDIR: tmp });
    const [, pid] = await p.waitFor("stderr", /QEMU-PID (\d+)\n/);
    p.child.kill("SIGTERM");
    const status = await p.done;
    assert.equal(status.code, 143, p.stderr);
    assert.match(p.stderr, /Terminated \(SIGTERM\): aborting steps/);
    const report = JSON.parse(p.stdout);
    assert.equal(report.interrupted, true);
    assert.equal(report.interruptedBy, "SIGTERM");
    assert.equal(report.playbooks[0].status, "interrupted");
    assert.equal(await readIfExists(marker), "cleanup prelaunch", p.stderr);
    assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
    assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
  });
});

Deno.test("qmp shell --launch in batch mode: SIGINT stops QEMU, exit 130, no temp dir", async () => {
  await withDirs(async (_work, tmp) => {
    const p = new Proc(
      ["run", ...PERMS, QMP, "shell", "--launch", "--verbose"],
      { TMPDIR: tmp },
      "piped",
    );
    const stdin = p.child.stdin.getWriter();
    try {
      await stdin.write(new TextEncoder().encode("query-status\n"));
      await p.waitFor("stdout", /"status"/); // the VM is up and the shell waits for input
      const [, pid] = await p.waitFor("stderr", /started pid (\d+)/);
      assert.equal((await entries(tmp)).length, 1, "the launched VM's dir");
      p.child.kill("SIGINT");
      const status = await p.done;
      assert.equal(status.code, 130, p.stderr);
      assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
      assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
    } finally {
      await stdin.close().catch(() => {});
    }
  });
});

Deno.test("qmp exec --launch: SIGINT while QEMU starts stops it, exit 130, no temp dir", async () => {
  await withDirs(async (work, tmp) => {
    // A "QEMU" on PATH that starts and never opens its monitor.
    const bin = `${work}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(
      `${bin}/qemu-system-x86_64`,
      `#!/bin/sh\necho $$ > ${work}/qemu.pid\nexec sleep 30\n`,
    );
    await Deno.chmod(`${bin}/qemu-system-x86_64`, 0o755);
    const p = new Proc(["run", ...PERMS, QMP, "exec", "--launch", "query-status"], {
      TMPDIR: tmp,
      PATH: `${bin}:${Deno.env.get("PATH")}`,
    });
    let pid: string | undefined;
    const deadline = Date.now() + 30_000;
    while (!(pid = (await readIfExists(`${work}/qemu.pid`))?.trim()) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(pid, "the fake QEMU never started");
    p.child.kill("SIGINT");
    const status = await p.done;
    assert.equal(status.code, 130, p.stderr);
    assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
    assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
  });
});

Deno.test("qmp events --launch: Ctrl-C is still its normal end (exit 0), no temp dir", async () => {
  await withDirs(async (_work, tmp) => {
    const p = new Proc(["run", ...PERMS, QMP, "events", "--launch", "--verbose"], { TMPDIR: tmp });
    await p.waitFor("stderr", /listening on .*Ctrl-C to stop/);
    const [, pid] = await p.waitFor("stderr", /started pid (\d+)/);
    p.child.kill("SIGINT");
    const status = await p.done;
    assert.equal(status.code, 0, p.stderr);
    assert.equal(await pidExists(Number(pid)), false, `QEMU ${pid} is still running`);
    assert.deepEqual(await entries(tmp), [], "temp dirs left behind");
  });
});
