/**
 * libvirt beyond the transport: the guest agent through libvirt (the tiny guest runs qemu-ga),
 * playbooks with `vm: { libvirt: … }` and `--qmp libvirt:DOMAIN` (Ctrl-C destroys the domain;
 * SIGKILL too, by libvirt's autodestroy), and the CLI on libvirt addresses.
 */
import assert from "node:assert/strict";
import { connectAgent } from "../lib/agent/client.ts";
import { startLibvirtDomain } from "../lib/libvirt_domain.ts";
import { qmp as qmpCli } from "./helpers/cli.ts";
import {
  createDomain,
  domainXml,
  ensureLibvirtd,
  libvirtSkipReason,
  loadLibvirtFirst,
  releaseLibvirtd,
  tinyGuestCopy,
  uniqueName,
  virsh,
} from "./helpers/libvirtd.ts";

const skip = libvirtSkipReason();
const ROOT = new URL("..", import.meta.url).pathname;
const PLAY = `${ROOT}scripts/play.ts`;
const PERMS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-run",
  "--allow-env",
  "--allow-ffi",
];

async function domainExists(name: string): Promise<boolean> {
  return (await virsh("list", "--name", "--all")).split("\n").some((l) => l.trim() === name);
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Writes a playbook file; `vm` is its meta.vm expression (TypeScript source). */
async function writePlaybook(dir: string, vm: string, body: string): Promise<string> {
  const file = `${dir}/lv.playbook.ts`;
  await Deno.writeTextFile(
    file,
    `import { playbook } from "${ROOT}mod.ts";\n` +
      `export default playbook({ name: "libvirt", ${vm} }, async (t) => {\n${body}\n});\n`,
  );
  return file;
}

/** Spawns play.ts; output collected; killed after `timeoutMs`. */
function play(args: string[], timeoutMs = 120_000) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", ...PERMS, PLAY, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  const done = child.output().then((o) => {
    clearTimeout(timer);
    const d = new TextDecoder();
    return {
      code: o.code,
      signal: o.signal,
      stdout: d.decode(o.stdout),
      stderr: d.decode(o.stderr),
    };
  });
  return { child, done };
}

loadLibvirtFirst();

Deno.test({
  name: "libvirt: the guest agent through libvirt (tiny guest running qemu-ga)",
  ignore: skip !== undefined,
  async fn(t) {
    const guest = await tinyGuestCopy();
    if (!guest?.agent) {
      if (guest) await Deno.remove(guest.dir, { recursive: true });
      console.warn("skipped: the tiny guest with qemu-ga is not built (deno task guest)");
      return;
    }
    await ensureLibvirtd();
    try {
      await t.step("connectAgent(libvirt:DOMAIN): waitReady, osInfo, exec", async () => {
        await using dom = await createDomain({ kernel: guest, agent: true });
        await using agent = await connectAgent(`libvirt:${dom.name}`, { sync: false });
        await agent.waitReady({ timeout: "120s" });
        assert.equal((await agent.osInfo()).id, "qmpkit-tiny");
        const r = await agent.exec("/bin/echo", ["hello"]);
        assert.equal(r.stdout, "hello\n");
        // A failing command is the agent's error, named; the connection stays usable.
        await assert.rejects(agent.readFile("/nonexistent"), /nonexistent|No such file/);
        await agent.ping();
        // The CLI on the same address.
        const cli = await qmpCli(
          ["agent", `libvirt:${dom.name}`, "exec", "--", "/bin/echo", "hi"],
          {
            timeoutMs: 60_000,
          },
        );
        assert.equal(cli.code, 0, cli.stderr);
        assert.equal(cli.stdout, "hi\n");
      });

      await t.step("startLibvirtDomain(): dom.agent and dom.qmp, destroy()", async () => {
        const name = uniqueName("start");
        const dom = await startLibvirtDomain({
          xml: domainXml({ name, kernel: guest, agent: true }),
        });
        try {
          assert.equal(dom.name, name);
          assert.equal(dom.address, `libvirt+qemu:///system#${name}`);
          assert.equal((await dom.qmp.execute("query-status")).status, "running");
          await dom.agent.waitReady({ timeout: "120s" });
          assert.equal((await dom.agent.exec("/bin/uname", ["-m"])).stdout, "x86_64\n");
          // No reply when it works (libvirt reports the agent gone): success, and the
          // domain powers off.
          await dom.agent.shutdown({ qmp: dom.qmp, timeout: "60s" });
          const t0 = Date.now();
          while (await dom.isActive()) {
            assert.ok(Date.now() - t0 < 60_000, "still running 60 s after guest-shutdown");
            await new Promise((r) => setTimeout(r, 200));
          }
        } finally {
          await dom.destroy();
        }
        assert.equal(await domainExists(name), false);
      });

      await t.step("agent not in the domain: waitReady times out with the usual hint", async () => {
        await using dom = await createDomain();
        await using agent = await connectAgent(`libvirt:${dom.name}`, { sync: false });
        await assert.rejects(
          agent.waitReady({ timeout: "2s" }),
          (e: Error) => e.name === "TimeoutError" && /qemu-ga/.test(e.message + String(e.cause)),
        );
      });
    } finally {
      await Deno.remove(guest.dir, { recursive: true });
      await releaseLibvirtd();
    }
  },
});

Deno.test({
  name: "libvirt: playbooks (vm: { libvirt }, --qmp libvirt:…, Ctrl-C, SIGKILL) and the CLI",
  ignore: skip !== undefined,
  async fn(t) {
    await ensureLibvirtd();
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-libvirt-play-" });
    try {
      await t.step("vm: { libvirt: { xml } } runs and destroys the domain", async () => {
        const name = uniqueName("play");
        const file = await writePlaybook(
          dir,
          `vm: { libvirt: { xml: ${JSON.stringify(domainXml({ name }))} } }`,
          `  await t.step("stop", () => t.expectEvent("STOP", () => t.qmp.execute("stop")));\n` +
            `  await t.step("no t.vm", () => {\n` +
            `    try { t.vm; } catch (e) { t.expect(String(e)).toMatch(/libvirt domain/); return; }\n` +
            `    throw new Error("t.vm worked");\n` +
            `  });`,
        );
        const r = await play([file]).done;
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.equal(await domainExists(name), false);
      });

      await t.step("--qmp libvirt:DOMAIN attaches", async () => {
        await using dom = await createDomain();
        const file = await writePlaybook(
          dir,
          "",
          `  await t.step("status", async () => t.expect(await t.qmp.execute("query-status"))` +
            `.toMatchObject({ status: "running" }));`,
        );
        const r = await play([file, "--qmp", `libvirt:${dom.name}`]).done;
        assert.equal(r.code, 0, r.stdout + r.stderr);
      });

      for (const sig of ["SIGINT", "SIGKILL"] as const) {
        await t.step(`${sig} while a step runs: the domain is destroyed`, async () => {
          const name = uniqueName(sig.toLowerCase());
          const file = await writePlaybook(
            dir,
            `vm: { libvirt: { xml: ${JSON.stringify(domainXml({ name }))} } }`,
            `  await t.step("wait", () => new Promise((r) => setTimeout(r, 60_000)));`,
          );
          const p = play([file]);
          await until(`domain ${name} started`, 60_000, () => domainExists(name));
          await new Promise((r) => setTimeout(r, 300));
          p.child.kill(sig);
          await p.done;
          // SIGINT: the runner destroys it; SIGKILL: libvirtd does (autodestroy).
          await until(`domain ${name} gone`, 15_000, async () => !(await domainExists(name)));
        });
      }

      await t.step("qmp exec / qmp info on libvirt addresses; bad ones in one line", async () => {
        await using dom = await createDomain();
        const exec = await qmpCli(["exec", `libvirt:${dom.name}`, "query-status"]);
        assert.equal(exec.code, 0, exec.stderr);
        assert.equal(JSON.parse(exec.stdout).status, "running");
        const info = await qmpCli(["info", `libvirt+qemu:///system#${dom.name}`]);
        assert.equal(info.code, 0, info.stderr);
        assert.match(info.stdout, new RegExp(`Name\\s+${dom.name}`));
        const bad = await qmpCli(["exec", "libvirt:no-such-domain-x", "query-status"]);
        assert.equal(bad.code, 1);
        assert.match(bad.stderr, /libvirt: Domain not found: no domain with matching name/);
        assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
      await releaseLibvirtd();
    }
  },
});
