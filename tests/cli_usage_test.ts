/**
 * The `qmp` CLI as a user meets it, run as a subprocess against the fake
 * server: batch-mode input errors, option conflicts, global flags, address
 * forms (bare relative socket paths, $QMP_SOCKET), error wording and exit
 * codes.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { FAKE_STATUS, fakeMonitor } from "./helpers/fake_monitor.ts";
import { qmp, show } from "./helpers/cli.ts";
import { parseAddress } from "../lib/address.ts";

Deno.test("qmp shell batch: input errors are line N errors and obey --keep-going", async () => {
  await using server = await fakeMonitor();
  const input = `device_add driver="usb-tablet\n{"execute":"query-status"\nx=[1,2\nquery-status\n`;
  const stop = await qmp(["shell", server.address], { stdin: input });
  assertEquals(stop.code, 1, show(stop));
  assertEquals(stop.stdout, "", show(stop));
  assertEquals(
    stop.stderr,
    `qmp shell: line 1: error: No closing quotation for " in "\\"usb-tablet"\n`,
  );

  const all = await qmp(["shell", server.address, "--keep-going"], { stdin: input });
  assertEquals(all.code, 1, show(all));
  const errors = all.stderr.trimEnd().split("\n");
  assertEquals(errors.length, 3, show(all));
  assert(errors[0].startsWith("qmp shell: line 1: error: No closing quotation"), show(all));
  assert(errors[1].startsWith("qmp shell: line 2: error: "), show(all));
  assert(errors[2].startsWith("qmp shell: line 3: error: Unbalanced brackets"), show(all));
  assertEquals(JSON.parse(all.stdout), FAKE_STATUS);
});

/** One line of error (plus nothing else), with balanced quotes. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, stderr);
  for (const q of [`"`, `'`]) {
    assert(lines[0].split(q).length % 2 === 1, `unbalanced ${q}: ${stderr}`);
  }
  return lines[0];
}

Deno.test("qmp options: conflicts are named (ADDRESS and --launch, --pretty and --compact)", async () => {
  await using server = await fakeMonitor();
  const both = await qmp(["exec", server.address, "--launch", "query-status"]);
  assertEquals(both.code, 2, show(both));
  assertEquals(
    oneLine(both.stderr),
    `qmp exec: error: both an ADDRESS (${server.address}) and --launch were given: --launch ` +
      `starts its own VM, so drop one of them (see qmp exec --help)`,
  );
  const guest = await qmp(["shell", "--guest", "tiny", server.path], { stdin: "" });
  assertEquals(guest.code, 2, show(guest));
  assert(
    oneLine(guest.stderr).includes(`both an ADDRESS (${server.path}) and --guest`),
    show(guest),
  );

  for (const command of [["exec", server.address, "query-status"], ["shell", server.address]]) {
    const r = await qmp([...command, "--pretty", "--compact"], { stdin: "query-status\n" });
    assertEquals(r.code, 2, show(r));
    assertEquals(
      oneLine(r.stderr),
      `qmp ${command[0]}: error: --pretty and --compact conflict: give one of them ` +
        `(see qmp ${command[0]} --help)`,
    );
    assertEquals(r.stdout, "");
  }
});

Deno.test("qmp options: common flags before the command; unknown ones are named", async () => {
  await using server = await fakeMonitor();
  for (const pre of [["-v"], ["--verbose"], ["--connect-timeout", "3s"], ["--retry", "-v"]]) {
    const r = await qmp([...pre, "exec", server.address, "query-status"]);
    assertEquals(r.code, 0, `${pre}: ${show(r)}`);
    assertEquals(JSON.parse(r.stdout), FAKE_STATUS);
  }
  const bogus = await qmp(["--bogus", "exec", server.address, "query-status"]);
  assertEquals(bogus.code, 2, show(bogus));
  assert(oneLine(bogus.stderr).startsWith("qmp: error: unknown option --bogus"), show(bogus));

  const typo = await qmp(["exec", server.address, "query-status", "--prety"]);
  assertEquals(typo.code, 2, show(typo));
  assertEquals(
    oneLine(typo.stderr),
    "qmp exec: error: unknown option --prety (did you mean --pretty?) (see qmp exec --help)",
  );
  const missing = await qmp(["exec", server.address, "query-status", "--timeout"]);
  assertEquals(missing.code, 2, show(missing));
  assertEquals(
    oneLine(missing.stderr),
    "qmp exec: error: --timeout needs a value (see qmp exec --help)",
  );
});

Deno.test("qmp shell: qmp-shell's -p, -l and -v; -N outside the shell is explained", async () => {
  await using server = await fakeMonitor();
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-cli-usage-" });
  try {
    const r = await qmp(["shell", "-p", "-v", "-l", `${dir}/log`, server.address], {
      stdin: "query-status\n",
    });
    assertEquals(r.code, 0, show(r));
    assertEquals(r.stdout, JSON.stringify(FAKE_STATUS, null, 2) + "\n", "-p is --pretty");
    assertEquals(r.stderr, `{"execute":"query-status"}\n`, "-v echoes the JSON sent");
    const log = (await Deno.readTextFile(`${dir}/log`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assertEquals(log.map((l) => [l.execute, l.return]), [["query-status", FAKE_STATUS]]);

    // -N belongs to the shell; elsewhere it is explained.
    const n = await qmp(["exec", "-N", server.address, "query-status"]);
    assertEquals(n.code, 2, show(n));
    assert(/unknown option -N: it is a qmp shell option/.test(oneLine(n.stderr)), show(n));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qmp shell -v: the JSON echoed to the terminal has its secrets redacted", async () => {
  await using server = await fakeMonitor({
    "change-vnc-password": (req, conn) => conn.reply(req, {}),
  });
  const r = await qmp(["shell", "-v", "--keep-going", server.address], {
    stdin: "change-vnc-password password=hunter9-echo\n" +
      '{"execute":"change-vnc-password","arguments":{"password":"hunter8-echo"}}\n',
  });
  assertEquals(r.code, 0, show(r));
  assert(r.stderr.includes('"execute":"change-vnc-password"'), show(r));
  assert(!/hunter\d-echo/.test(r.stderr + r.stdout), show(r));
});

Deno.test("address: a name without ':' is a unix socket path relative to the current directory", () => {
  assertEquals(parseAddress("qmp.sock"), { transport: "unix", path: "qmp.sock" });
  assertEquals(parseAddress("sock"), { transport: "unix", path: "sock" });
  assertEquals(parseAddress("localhost:4444"), {
    transport: "tcp",
    hostname: "localhost",
    port: 4444,
  });
});

Deno.test("qmp: a bare relative socket path and $QMP_SOCKET are addresses", async () => {
  await using server = await fakeMonitor();
  const dir = server.path.slice(0, server.path.lastIndexOf("/"));
  const bare = await qmp(["exec", "qmp.sock", "query-status"], { cwd: dir });
  assertEquals(bare.code, 0, show(bare));
  assertEquals(JSON.parse(bare.stdout), FAKE_STATUS);
  const shell = await qmp(["shell", "qmp.sock"], { cwd: dir, stdin: "query-status\n" });
  assertEquals(shell.code, 0, show(shell));

  const env = { QMP_SOCKET: server.path };
  const exec = await qmp(["exec", "query-status"], { env });
  assertEquals(exec.code, 0, show(exec));
  assertEquals(JSON.parse(exec.stdout), FAKE_STATUS);
  const viaShell = await qmp(["shell"], { env, stdin: "query-status\n" });
  assertEquals(viaShell.code, 0, show(viaShell));
  assertEquals(JSON.parse(viaShell.stdout), FAKE_STATUS);
  // An ADDRESS on the command line wins over $QMP_SOCKET.
  const explicit = await qmp(["exec", server.address, "query-status"], {
    env: { QMP_SOCKET: "/nonexistent/qmp.sock" },
  });
  assertEquals(explicit.code, 0, show(explicit));
  const inCwd = await qmp(["exec", "qmp.sock", "query-status"], {
    cwd: dir,
    env: { QMP_SOCKET: "/nonexistent/qmp.sock" },
  });
  assertEquals(inCwd.code, 0, show(inCwd));

  // A bare name with no such socket: probably a TCP address without its port.
  const nope = await qmp(["exec", "localhost", "query-status"], { cwd: dir });
  assertEquals(nope.code, 2, show(nope));
  assertEquals(
    oneLine(nope.stderr),
    `qmp exec: error: no socket named "localhost" in the current directory (a bare name is ` +
      `a unix socket path; a TCP address needs a port: HOST:PORT) (see qmp exec --help)`,
  );
  const none = await qmp(["exec"], { env: { QMP_SOCKET: "" } });
  assertEquals(none.code, 2, show(none));
  assert(oneLine(none.stderr).includes("or set QMP_SOCKET"), show(none));
});

Deno.test("qmp shell batch: a line over 64 MiB is a line error, and --keep-going goes on", async () => {
  await using server = await fakeMonitor();
  const long = `query-status x=${"a".repeat(64 * 1024 * 1024)}\n`;
  const r = await qmp(["shell", server.address, "--keep-going"], {
    stdin: long + "query-status\n",
    timeoutMs: 60_000,
  });
  assertEquals(r.code, 1, show(r));
  assertEquals(
    r.stderr,
    `qmp shell: line 1: error: the line is ${long.length - 1} bytes, over the 64 MiB limit ` +
      `(QEMU's own limit for one command): not run\n`,
  );
  assertEquals(JSON.parse(r.stdout), FAKE_STATUS);
});

Deno.test("qmp errors: one line (plus hint), no stack unless --verbose, CLI wording", async () => {
  await using server = await fakeMonitor({
    "query-big": async (req, conn) => {
      const big = `{"return": "${"a".repeat(11 << 20)}", "id": ${JSON.stringify(req.id)}}\r\n`;
      await conn.write(big).catch(() => {/* the client hung up, as it should */});
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-cli-usage-" });
  try {
    const cases: { args: string[]; code: number; line: RegExp; not?: RegExp }[] = [
      {
        args: ["exec", `${dir}/nope.sock`, "query-status"],
        code: 1,
        line: /^qmp exec: error: Cannot connect to .*Use --retry to wait/,
        not: /retry: true/,
      },
      {
        args: ["shell", server.address, "--log", `${dir}/no/such/dir/log`],
        code: 1,
        line: new RegExp(
          `^qmp shell: error: cannot open ${dir}/no/such/dir/log: No such file or directory$`,
        ),
      },
      {
        args: ["exec", server.address, "query-status", "--connect-timeout", "99999999999999"],
        code: 2,
        line: /^qmp exec: error: --connect-timeout: Invalid duration .* \(see qmp exec --help\)$/,
      },
      {
        args: ["exec", server.address, "query-big"],
        code: 1,
        line:
          /^qmp exec: error: .*larger than the 10485760-byte limit.*qmp accepts messages up to 10 MiB/,
        not: /maxMessageSize/,
      },
    ];
    for (const c of cases) {
      const r = await qmp(c.args, { stdin: "" });
      assertEquals(r.code, c.code, show(r));
      const line = oneLine(r.stderr);
      assert(c.line.test(line), show(r));
      assert(!c.not?.test(line), show(r));
      assert(!/\n\s+at /.test(r.stderr), show(r));
    }
    const verbose = await qmp(["-v", "exec", `${dir}/nope.sock`, "query-status"]);
    assertEquals(verbose.code, 1, show(verbose));
    assert(/\n\s+at /.test(verbose.stderr), `--verbose shows the stack: ${show(verbose)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qmp options: an unknown short flag suggests the long one; a bare socket conflicts with --launch", async () => {
  await using server = await fakeMonitor();
  const info = await qmp(["info", "-p", server.address]);
  assertEquals(info.code, 2, show(info));
  assertEquals(
    oneLine(info.stderr),
    "qmp info: error: unknown option -p (did you mean --pretty?) (see qmp info --help)",
  );
  const dir = server.path.slice(0, server.path.lastIndexOf("/"));
  const both = await qmp(["exec", "--launch", "qmp.sock", "query-status"], { cwd: dir });
  assertEquals(both.code, 2, show(both));
  assert(oneLine(both.stderr).includes("both an ADDRESS (qmp.sock) and --launch"), show(both));
});
