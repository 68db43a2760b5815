/**
 * `qmp agent` and `qmp shell --agent` through the real CLI against the real qemu-ga run on the
 * host (dangerous commands blocked: tests/helpers/host_agent.ts), plus shell completion.
 */
import assert from "node:assert/strict";
import { completeAgent } from "../scripts/cli/agent_shell.ts";
import { hostAgentAvailable, startHostAgent } from "./helpers/host_agent.ts";
import { qmp } from "./helpers/cli.ts";
import { startFakeAgent } from "./helpers/fake_agent.ts";

const ignore = !hostAgentAvailable();

Deno.test({
  name: "qmp agent: a command prints its return value; an agent error is one line, exit 1",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    const os = await qmp(["agent", host.address, "guest-get-osinfo", "--compact"]);
    assert.equal(os.code, 0, os.stderr);
    assert.equal(JSON.parse(os.stdout).machine, "x86_64");
    assert.equal(os.stdout.trim().split("\n").length, 1);
    const path = `${host.dir}/hello.txt`;
    await Deno.writeTextFile(path, "hello");
    const open = await qmp(["agent", host.path, "guest-file-open", `path=${path}`]);
    assert.equal(open.code, 0, open.stderr);
    const handle = Number(open.stdout);
    const read = await qmp([
      "agent",
      host.address,
      "guest-file-read",
      "--args",
      JSON.stringify({ handle }),
      "--compact",
    ]);
    assert.equal(atob(JSON.parse(read.stdout)["buf-b64"]), "hello");
    assert.equal(
      (await qmp(["agent", host.address, "guest-file-close", `handle=${handle}`])).code,
      0,
    );
    const missing = await qmp(["agent", host.address, "guest-file-open", "path=/nonexistent"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout, "");
    assert.match(
      missing.stderr,
      /^qmp agent: error: guest agent: guest-file-open failed: .*GenericError\)\n$/,
    );
    const blocked = await qmp(["agent", host.address, "guest-shutdown"]);
    assert.equal(blocked.code, 1, "blocked on the host: the agent's error is reported");
    assert.match(blocked.stderr, /has been disabled \(CommandNotFound\)/);
    const usage = await qmp(["agent", host.address]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Missing COMMAND/);
  },
});

Deno.test({
  name: "qmp agent exec: the guest's stdout/stderr, its exit code; 255 when the agent fails",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    const r = await qmp([
      "agent",
      host.address,
      "exec",
      "--",
      "/bin/sh",
      "-c",
      "echo out; echo err >&2; exit 7",
    ]);
    assert.deepEqual(r, { code: 7, stdout: "out\n", stderr: "err\n" });
    const ls = await qmp(["agent", host.address, "exec", "--", "/bin/ls", "-l", host.dir]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^total \d+/);
    const input = await qmp([
      "agent",
      host.address,
      "exec",
      "--input",
      "piped in",
      "--",
      "/bin/cat",
    ]);
    assert.equal(input.stdout, "piped in");
    const killed = await qmp(["agent", host.address, "exec", "--", "/bin/sh", "-c", "kill -9 $$"]);
    assert.equal(killed.code, 128 + 9);
    const missing = await qmp(["agent", host.address, "exec", "--", "/nonexistent/prog"]);
    assert.equal(missing.code, 255);
    assert.match(missing.stderr, /^qmp agent: error: .*guest-exec failed/);
    const slow = await qmp([
      "agent",
      host.address,
      "exec",
      "--timeout",
      "300ms",
      "--",
      "/bin/sleep",
      "30",
    ]);
    assert.equal(slow.code, 255);
    const pid = /pid (\d+)/.exec(slow.stderr)?.[1];
    assert.ok(pid, slow.stderr);
    assert.match(
      slow.stderr,
      new RegExp(`left running in the guest.*qmp agent .* exec -- /bin/kill ${pid}`),
    );
    assert.equal((await qmp(["agent", host.address, "exec", "--", "/bin/kill", pid])).code, 0);
    const truncated = await qmp([
      "agent",
      host.address,
      "exec",
      "--max-output",
      "1K",
      "--",
      "/bin/sh",
      "-c",
      "head -c 5000 /dev/zero",
    ]);
    assert.equal(truncated.code, 0);
    assert.equal(truncated.stdout.length, 1024);
    assert.match(truncated.stderr, /warning: the program's stdout was truncated/);
  },
});

Deno.test({
  name: "qmp agent: a silent agent is a timeout that asks whether qemu-ga runs",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/silent.sock`;
    const listener = Deno.listen({ transport: "unix", path }); // accepts, never answers
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of listener) held.push(c);
    })();
    try {
      const r = await qmp(["agent", `unix:${path}`, "guest-ping", "--connect-timeout", "500ms"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /did not complete within 500ms.*is qemu-ga started in the guest\?/);
      assert.equal(r.stderr.trim().split("\n").length, 1);
    } finally {
      listener.close();
      await accepting.catch(() => {});
      for (const c of held) c.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "qmp shell --agent: batch lines run against the agent; errors stop it",
  ignore,
  async fn() {
    await using host = await startHostAgent();
    const ok = await qmp(
      ["shell", "--agent", host.address, "--compact"],
      { stdin: "guest-ping\n# a comment\nexec /bin/echo hi\nguest-get-host-name\n" },
    );
    assert.equal(ok.code, 0, ok.stderr);
    const lines = ok.stdout.trim().split("\n");
    assert.equal(lines[0], "{}");
    assert.equal(lines[1], "hi");
    assert.equal(lines[2], "[exit code 0]");
    assert.ok("host-name" in JSON.parse(lines[3]));
    const bad = await qmp(
      ["shell", "--agent", host.address],
      { stdin: "guest-file-open path=/nonexistent\nguest-ping\n" },
    );
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout, "");
    assert.match(bad.stderr, /^qmp shell: line 1: Error: guest agent: guest-file-open failed/);
  },
});

Deno.test("qmp shell --agent: completion of enabled commands and of argument names", () => {
  const commands = ["guest-exec", "guest-exec-status", "guest-file-open", "guest-ping"];
  assert.deepEqual(completeAgent("guest-e", 7, commands), {
    start: 0,
    candidates: ["guest-exec", "guest-exec-status"],
  });
  assert.deepEqual(completeAgent("guest-file-open p", 17, commands), {
    start: 16,
    candidates: ["path="],
  });
  assert.deepEqual(completeAgent("guest-file-open path=/x ", 24, commands), {
    start: 24,
    candidates: ["mode="],
  });
  assert.deepEqual(completeAgent("ex", 2, commands).candidates, ["exec", "exit"]);
  // A command the agent does not enable is not offered even though the schema has it.
  assert.deepEqual(completeAgent("guest-shut", 10, commands).candidates, []);
});

Deno.test("qmp shell --agent: a guest-info reply without supported_commands: a notice, the shell lives", async () => {
  await using agent = await startFakeAgent((req) =>
    req.execute === "guest-info"
      ? { return: { version: "odd" } }
      : req.execute === "guest-ping"
      ? { return: {} }
      : { error: { class: "CommandNotFound", desc: `${req.execute} not found` } }
  );
  const r = await qmp(["shell", "--agent", agent.address], { stdin: "guest-ping\n" });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /guest-info.*supported_commands/);
  assert.doesNotMatch(r.stderr, /Cannot read properties/);
  assert.match(r.stdout, /\{\}/);
});
