/**
 * `qmp exec|info|events|shell` and `deno task play --qmp` against a real QEMU's
 * TLS monitor, with `--tls-ca/--tls-cert/--tls-key`; and their TLS errors:
 * one line, the documented exit code (2: bad address or unreadable
 * certificate file; 1: the connection failed), certificate paths only.
 */
import assert from "node:assert/strict";
import { launch, type Machine } from "../lib/machine.ts";
import { LOCAL_SAN, makePki, type TestPki } from "./helpers/tls_pki.ts";

const QMP_TS = new URL("../scripts/qmp.ts", import.meta.url).pathname;
const PLAY_TS = new URL("../scripts/play.ts", import.meta.url).pathname;
const PLAYBOOK_URL = new URL("../lib/runner/playbook.ts", import.meta.url).href;
const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(script: string, args: string[], stdin?: string): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-check", ...PERMS, script, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const show = (r: Run) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

async function tlsVm(
  pki: TestPki,
  verifyPeer: boolean,
): Promise<Machine> {
  const dir = await pki.serverDir(
    verifyPeer ? "on" : "off",
    await pki.leaf(verifyPeer ? "server-on" : "server-off", { usage: "server", san: LOCAL_SAN }),
  );
  return await launch({ tls: { dir, verifyPeer }, timeout: "30s" });
}

Deno.test("cli tls: exec, info, events and shell over tls:// with --tls-ca", async () => {
  await using pki = await makePki();
  await using vm = await tlsVm(pki, false);
  const at = vm.tlsAddress!;
  const ca = ["--tls-ca", pki.caFile];

  const exec = await run(QMP_TS, ["exec", at, "query-status", ...ca]);
  assert.equal(exec.code, 0, show(exec));
  assert.equal(typeof JSON.parse(exec.stdout).status, "string");

  const info = await run(QMP_TS, ["info", at, ...ca]);
  assert.equal(info.code, 0, show(info));
  assert.match(info.stdout, /7\.2/);

  const shell = await run(QMP_TS, ["shell", at, ...ca], "query-status\n");
  assert.equal(shell.code, 0, show(shell));
  assert.match(shell.stdout, /"status"/);

  // events: QEMU sends STOP to every monitor; cause it on the unix one.
  const events = run(QMP_TS, ["events", at, ...ca, "--name", "STOP", "--count", "1", "-t", "20s"]);
  let seen: Run | undefined;
  events.then((r) => (seen = r));
  for (let i = 0; i < 100 && seen === undefined; i++) {
    await vm.qmp.execute("stop");
    await vm.qmp.execute("cont");
    await new Promise((r) => setTimeout(r, 100));
  }
  const ev = await events;
  assert.equal(ev.code, 0, show(ev));
  assert.equal(JSON.parse(ev.stdout.split("\n")[0]).event, "STOP");
});

Deno.test("cli tls: client certificates, and each error in one line with its exit code", async () => {
  await using pki = await makePki();
  await using vm = await tlsVm(pki, true);
  const at = vm.tlsAddress!;
  const client = await pki.leaf("client", { usage: "client" });
  const ok = await run(QMP_TS, [
    "exec",
    at,
    "query-status",
    "--tls-ca",
    pki.caFile,
    "--tls-cert",
    client.cert,
    "--tls-key",
    client.key,
  ]);
  assert.equal(ok.code, 0, show(ok));

  const cases: [string[], number, RegExp][] = [
    [
      ["exec", at, "query-status", "--tls-ca", pki.caFile],
      1,
      /^qmp exec: error: tls:\/\/127\.0\.0\.1:\d+ closed the TLS connection without a greeting: it wants a client certificate .*--tls-cert FILE --tls-key FILE/,
    ],
    [
      ["exec", at, "query-status", "--tls-ca", pki.otherCaFile],
      1,
      /^qmp exec: error: The TLS certificate of tls:\/\/.* is not signed by a CA given/,
    ],
    [
      ["exec", at, "query-status", "--tls-ca", `${pki.dir}/nope.pem`],
      2,
      /^qmp exec: error: Cannot read the TLS CA certificate file .*\/nope\.pem: No such file/,
    ],
    [
      [
        "exec",
        at,
        "query-status",
        "--tls-ca",
        pki.caFile,
        "--tls-cert",
        client.key,
        "--tls-key",
        client.key,
      ],
      2,
      /^qmp exec: error: The TLS client certificate file .*client-key\.pem holds no PEM certificate/,
    ],
    [
      ["exec", "unix:/tmp/x.sock", "query-status", "--tls-ca", pki.caFile],
      2,
      /--tls-ca applies to a tls:\/\/HOST:PORT address/,
    ],
    [["exec", "ftp://127.0.0.1:1", "query-status"], 2, /unknown scheme "ftp:\/\/"/],
    [["exec", "tls://127.0.0.1", "query-status"], 2, /missing ':PORT'/],
  ];
  for (const [args, code, re] of cases) {
    const r = await run(QMP_TS, args);
    assert.equal(r.code, code, `${args.join(" ")}: ${show(r)}`);
    assert.match(r.stderr, re, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /PRIVATE KEY|BEGIN/);
  }
});

Deno.test("cli tls: deno task play --qmp tls://... names the remote address", async () => {
  await using pki = await makePki();
  await using vm = await tlsVm(pki, false);
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-play-tls-" });
  try {
    const file = `${dir}/remote.playbook.ts`;
    await Deno.writeTextFile(
      file,
      `import { playbook } from ${JSON.stringify(PLAYBOOK_URL)};
export default playbook({ name: "remote status" }, async (t) => {
  await t.step("query-status", async () => {
    t.expect(typeof (await t.qmp.execute("query-status")).status).toBe("string");
  });
});
`,
    );
    const r = await run(PLAY_TS, [
      file,
      "--qmp",
      vm.tlsAddress!,
      "--tls-ca",
      pki.caFile,
      "--record",
      dir,
      "--reporter",
      "json",
    ]);
    assert.equal(r.code, 0, show(r));
    const record = await Deno.readTextFile(`${dir}/remote.jsonl`);
    const first = JSON.parse(record.split("\n")[0]);
    assert.equal(first.address, vm.tlsAddress, record.slice(0, 500));
    assert.ok(r.stdout.includes(vm.tlsAddress!) || r.stderr.includes(vm.tlsAddress!), show(r));

    const bad = await run(PLAY_TS, [file, "--qmp", vm.tlsAddress!, "--tls-ca", pki.otherCaFile]);
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, /not signed by a CA given/);
    const usage = await run(PLAY_TS, [file, "--tls-ca", pki.caFile]);
    assert.equal(usage.code, 2, show(usage));
    assert.match(usage.stderr, /--tls-ca applies to --qmp tls:\/\/HOST:PORT/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
