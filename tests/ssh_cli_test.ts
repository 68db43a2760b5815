/**
 * `qmp exec|info|events|shell` and `deno task play --qmp` with `ssh://`
 * addresses, against a real local sshd (127.0.0.1) and a real QEMU: results,
 * one-line errors and exit codes.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { PERMS, qmp, show } from "./helpers/cli.ts";
import { startQemuForClients } from "./helpers/qemu.ts";
import { startSshd } from "./helpers/sshd.ts";

const T = { sanitizeOps: true, sanitizeResources: true };
const PLAY = fileURLToPath(new URL("../scripts/play.ts", import.meta.url));
const PLAYBOOK_URL = new URL("../lib/runner/playbook.ts", import.meta.url).href;

function oneLineError(stderr: string, prog: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.ok(lines[0].startsWith(`${prog}: error: `), stderr);
  return lines[0];
}

Deno.test({
  name: "qmp CLI: exec, info, events and shell over ssh://; ssh failures are one line, exit 1",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const url = sshd.url(qemu.socketPath);
    const cfg = ["--ssh-config", sshd.configFile];

    let r = await qmp(["exec", url, "query-status", ...cfg]);
    assert.equal(r.code, 0, show(r));
    assert.equal(JSON.parse(r.stdout).status, "running");

    r = await qmp(["info", url, ...cfg]);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, new RegExp(`^Address +${url.replace(/[.]/g, "\\.")}$`, "m"));

    r = await qmp(["shell", url, ...cfg], { stdin: "query-status\n" });
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /"status": ?"running"/);

    // No --count: the timeout ends the stream, exit 0 (an idle -machine none sends nothing).
    r = await qmp(["events", url, ...cfg, "--timeout", "1s"], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, show(r));
    assert.equal(r.stderr, "");

    // An unknown host key: never prompted; --ssh-option accept-new is the way in.
    const empty = `${sshd.dir}/known_hosts_empty`;
    await Deno.writeTextFile(empty, "");
    const strict = ["--ssh-config", await sshd.clientConfig({ knownHosts: empty })];
    r = await qmp(["exec", url, "query-status", ...strict]);
    assert.equal(r.code, 1, show(r));
    assert.match(
      oneLineError(r.stderr, "qmp exec"),
      /does not know the host key .* with --ssh-option StrictHostKeyChecking=accept-new$/,
    );
    r = await qmp([
      "exec",
      url,
      "query-status",
      ...strict,
      "--ssh-option",
      "StrictHostKeyChecking=accept-new",
    ]);
    assert.equal(r.code, 0, show(r));

    // The remote socket is missing.
    r = await qmp(["exec", sshd.url("/run/vm1/qmp.sock"), "query-status", ...cfg]);
    assert.equal(r.code, 1, show(r));
    assert.match(
      oneLineError(r.stderr, "qmp exec"),
      /the remote socket \/run\/vm1\/qmp\.sock does not exist/,
    );

    // A wrong key.
    const other = await sshd.newKey("other_key");
    r = await qmp([
      "exec",
      url,
      "query-status",
      "--ssh-config",
      await sshd.clientConfig({ identityFile: other }),
    ]);
    assert.equal(r.code, 1, show(r));
    assert.match(
      oneLineError(r.stderr, "qmp exec"),
      /authentication to .* was refused .*--ssh-option IdentityFile=PATH/,
    );
    assert.doesNotMatch(r.stderr, /PRIVATE KEY|BEGIN OPENSSH/);
  },
});

Deno.test({
  name:
    "qmp CLI: bad ssh input is a usage error (exit 2); a hanging host ends at --connect-timeout",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    const cases: [string[], RegExp][] = [
      [["exec", "ftp://host/q.sock", "query-status"], /unknown scheme "ftp:\/\/"/],
      [["exec", "ssh://host", "query-status"], /remote socket path is missing/],
      [["info", "ssh://-oProxyCommand=x/q.sock"], /may not start with '-'/],
      [
        ["exec", "/tmp/q.sock", "query-status", "--ssh-config", sshd.configFile],
        /--ssh-config applies to ssh:\/\/ addresses/,
      ],
      [["info", "--launch", "--ssh-option", "Port=2"], /--ssh-option applies to ssh:\/\//],
      [
        ["exec", "ssh://h/q.sock", "query-status", "--ssh-option", "-oPort=2"],
        /--ssh-option takes KEY=VALUE/,
      ],
    ];
    for (const [args, re] of cases) {
      const r = await qmp(args);
      assert.equal(r.code, 2, `${args.join(" ")}\n${show(r)}`);
      assert.match(r.stderr, re, show(r));
      assert.equal(r.stderr.trim().split("\n").length, 1, show(r));
    }

    const marker = `sleep 28.${Deno.pid}`;
    const hang = await sshd.clientConfig({
      extra: ["Host hang.invalid", `  ProxyCommand ${marker}`],
    });
    const t0 = Date.now();
    const r = await qmp([
      "exec",
      "ssh://hang.invalid/run/vm1/qmp.sock",
      "query-status",
      "--ssh-config",
      hang,
      "--connect-timeout",
      "1s",
    ]);
    const took = Date.now() - t0;
    assert.equal(r.code, 1, show(r));
    assert.match(
      oneLineError(r.stderr, "qmp exec"),
      /did not complete within 1s; ssh had not finished connecting to hang\.invalid|timed out/,
    );
    assert.ok(took < 8000, `took ${took} ms`);
  },
});

Deno.test({
  name: "play --qmp ssh://: runs a playbook on the remote VM; reports and logs name the address",
  ...T,
  async fn() {
    await using sshd = await startSshd();
    await using qemu = await startQemuForClients({ machine: "none" });
    const dir = await Deno.makeTempDir({ prefix: "qmpkit-ssh-play-" });
    try {
      const file = `${dir}/remote.playbook.ts`;
      await Deno.writeTextFile(
        file,
        `import { playbook } from "${PLAYBOOK_URL}";
export default playbook({ name: "remote status" }, async (t) => {
  await t.step("query-status", async () => {
    t.expect(await t.qmp.execute("query-status")).toMatchObject({ status: "running" });
  });
});
`,
      );
      const url = sshd.url(qemu.socketPath);
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--quiet",
          ...PERMS,
          PLAY,
          file,
          "--qmp",
          url,
          "--ssh-config",
          sshd.configFile,
          "--reporter",
          "json",
          "--record",
          `${dir}/rec`,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
        signal: AbortSignal.timeout(60_000),
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `${stdout}\n${stderr}`);
      const report = JSON.parse(stdout);
      const text = JSON.stringify(report);
      assert.ok(text.includes(`attached to ${url}`), text);
      const recorded = await Deno.readTextFile(`${dir}/rec/remote.jsonl`);
      assert.match(recorded, /"execute":"query-status"/);

      // A missing remote socket fails the playbook (exit 1) with ssh's reason.
      const bad = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--quiet",
          ...PERMS,
          PLAY,
          file,
          "--qmp",
          sshd.url("/run/vm1/qmp.sock"),
          "--ssh-config",
          sshd.configFile,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
        signal: AbortSignal.timeout(60_000),
      }).output();
      const badErr = new TextDecoder().decode(bad.stderr);
      assert.equal(bad.code, 1, badErr);
      assert.match(badErr, /the remote socket \/run\/vm1\/qmp\.sock does not exist/);

      // Usage: ssh flags without an ssh:// --qmp.
      const usage = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", ...PERMS, PLAY, file, "--ssh-option", "Port=2"],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      assert.equal(usage.code, 2);
      assert.match(new TextDecoder().decode(usage.stderr), /--ssh-option applies to ssh:\/\//);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
