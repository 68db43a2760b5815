/**
 * Secrets against real QEMU 7.2, through the real entry points: `launch()`
 * with `-object secret,...` (log line, stderr, LaunchError from a bad option
 * next to a secret), QEMU handing a secret back to HMP `qom-get`, the
 * `qmp shell --log` file written by the CLI, and the runner's JSON/JUnit
 * reports and `--record` files. Every test first shows QEMU really got (or
 * repeated) the secret, then that no sink holds it.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { TranscriptEntry } from "../lib/client.ts";
import { LaunchError } from "../lib/errors.ts";
import { launch } from "../lib/machine.ts";
import { startQemuForClients } from "./helpers/qemu.ts";
import { type Run, runDeno } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const QMP_TS = fileURLToPath(new URL("../scripts/qmp.ts", import.meta.url));
const PLAY_TS = fileURLToPath(new URL("../scripts/play.ts", import.meta.url));
const PLAYBOOK_URL = new URL("../lib/runner/playbook.ts", import.meta.url).href;
const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];
const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, "0");

/** Runs a Deno script with `args` and `stdin` from the repository root, killed after `timeoutMs`. */
function run(script: string, args: string[], stdin?: string, timeoutMs = 60_000): Promise<Run> {
  return runDeno(script, args, {
    stdin,
    timeoutMs,
    cwd: ROOT,
    flags: ["--quiet", "--no-check", ...PERMS],
  });
}

function assertNone(where: string, text: string, secrets: string[]): void {
  for (const s of secrets) assert.ok(!text.includes(s), `${where} holds ${s}:\n${text}`);
}

Deno.test("launch() with -object secret: log line and stderr redacted; HMP qom-get reads it back, the transcript does not", async () => {
  const OPTS = "t-launch-opts-1";
  const JSON_FORM = "t-launch-json-2";
  const logs: string[] = [];
  const transcript: TranscriptEntry[] = [];
  const vm = await launch({
    machine: "none",
    timeout: "30s",
    args: [
      "-object",
      `secret,id=s0,data=${OPTS}`,
      "-object",
      JSON.stringify({ "qom-type": "secret", id: "s1", data: JSON_FORM }),
    ],
    log: (m) => logs.push(m),
    qmp: { transcript: (e) => transcript.push(e) },
  });
  let hmp: unknown;
  let qmp: unknown;
  try {
    // QEMU 7.2 hands a secret's data back, to HMP qom-get (JSON-quoted) and QMP qom-get.
    hmp = await vm.qmp.execute("human-monitor-command", {
      "command-line": "qom-get /objects/s0 data",
    });
    qmp = await vm.qmp.execute("qom-get", { path: "/objects/s1", property: "data" });
  } finally {
    await vm.shutdown();
  }
  assert.equal(hmp, `"${OPTS}"\r\n`, "the caller gets the value: QEMU received the real one");
  assert.equal(qmp, JSON_FORM);
  const started = logs.find((l) => l.includes("started pid"));
  assert.ok(started, logs.join("\n"));
  assert.match(started, /-object secret,id=s0,data=<redacted>/);
  assertNone("launch log", logs.join("\n"), [OPTS, JSON_FORM]);
  assertNone("transcript", JSON.stringify(transcript), [OPTS, JSON_FORM]);
  assertNone("Machine.log", vm.log + (vm.describeExit() ?? ""), [OPTS, JSON_FORM]);
});

Deno.test("launch() failing on a bad option next to a secret: LaunchError holds no secret (QEMU's stderr does)", async () => {
  for (
    const option of [
      "secret,id=s0,data=t-bad-opts-3,bogus=1",
      JSON.stringify({ "qom-type": "secret", id: "s0", data: "t-bad-json-4", bogus: 1 }),
    ]
  ) {
    const secret = option.includes("t-bad-opts-3") ? "t-bad-opts-3" : "t-bad-json-4";
    // The leak being fixed: QEMU repeats the whole option, secret included, on stderr.
    const raw = await new Deno.Command("qemu-system-x86_64", {
      args: ["-machine", "none", "-display", "none", "-object", option],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(new TextDecoder().decode(raw.stderr).includes(secret), "QEMU's stderr repeats it");

    const logs: string[] = [];
    const error = await launch({
      machine: "none",
      timeout: "30s",
      args: ["-object", option],
      log: (m) => logs.push(m),
    }).then(
      () => assert.fail("launch should fail"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof LaunchError, String(error));
    assert.match(error.stderr, /bogus|unexpected|Invalid parameter/, "QEMU's complaint is kept");
    const shown = Deno.inspect(error, { depth: 5 }) + error.message + error.stderr +
      error.commandLine.join(" ") + logs.join("\n");
    assertNone("LaunchError", shown, [secret]);
  }
});

Deno.test("qmp shell --log against real QEMU: every secret form redacted, file 0600, symlink refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-shell-log-test-" });
  try {
    await using qemu = await startQemuForClients({
      machine: "none",
      extraArgs: ["-vnc", `unix:${dir}/vnc.sock,password=on`],
    });
    const S = {
      objOpts: "t-sh-objadd-5",
      objJson: "t-sh-objjson-6",
      setPw: "t-sh-setpw-7",
      vncPw: "t-sh-vncpw-8",
      qomSet: "t-sh-qomset-9",
      hmpObj: "t-sh-hmpobj-10",
      hmpJson: "t-sh-hmpjson-11",
      hmpSetPw: "t-sh-hmpsetpw-12",
      hmpChange: "t-sh-hmpchg-13",
      hmpQomSet: "t-sh-hmpqs-14",
    };
    const log = `${dir}/session.jsonl`;
    const input = [
      `object-add qom-type=secret id=s0 data=${S.objOpts}`,
      JSON.stringify({
        execute: "object-add",
        arguments: { "qom-type": "secret", id: "s1", data: S.objJson },
      }),
      `set_password protocol=vnc password=${S.setPw}`,
      `change-vnc-password password=${S.vncPw}`,
      `qom-set path=/objects/s0 property=data value=${S.qomSet}`,
      `qom-get path=/objects/s0 property=data`,
      `hmp object_add secret,id=s2,data=${S.hmpObj}`,
      `hmp object_add {"qom-type":"secret","id":"s3","data":"${S.hmpJson}"}`,
      `hmp set_password vnc ${S.hmpSetPw}`,
      `hmp change vnc password ${S.hmpChange}`,
      `hmp qom-set /objects/s2 data ${S.hmpQomSet}`,
      `hmp qom-get /objects/s2 data`,
      `hmp qom-get /objects/s3 data`,
      `qom-get path=/objects/s1 property=data`,
    ].join("\n") + "\n";
    const r = await run(QMP_TS, ["shell", qemu.address, "--log", log, "--echo"], input);
    assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    // What the user asked for is printed: proof QEMU holds the real values.
    const out = r.stdout.split("\n");
    assert.ok(out.includes(JSON.stringify(S.qomSet)), r.stdout);
    assert.ok(out.includes(JSON.stringify(S.hmpQomSet)), r.stdout);
    assert.ok(out.includes(JSON.stringify(S.hmpJson)), r.stdout);
    assert.ok(out.includes(JSON.stringify(S.objJson)), r.stdout);
    // The --log file and the --echo lines hold none of them.
    const text = await Deno.readTextFile(log);
    const records = text.trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(records.length, 14, text);
    assertNone("--log file", text, Object.values(S));
    assertNone("--echo (stderr)", r.stderr, Object.values(S));
    assert.equal(octal((await Deno.stat(log)).mode!), "0600");
    assert.deepEqual(records[4].arguments, {
      path: "/objects/s0",
      property: "data",
      value: "<redacted>",
    });
    assert.equal(records[5].return, "<redacted>");
    assert.equal(records[11].return, "<redacted>");

    // A symlink is not followed; an existing readable file is tightened to 0600.
    const target = `${dir}/victim.txt`;
    await Deno.writeTextFile(target, "keep\n");
    await Deno.symlink(target, `${dir}/link.jsonl`);
    const refused = await run(
      QMP_TS,
      ["shell", qemu.address, "--log", `${dir}/link.jsonl`],
      "query-status\n",
    );
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /not a regular file \(a symbolic link\)/);
    assert.equal(await Deno.readTextFile(target), "keep\n");
    const old = `${dir}/old.jsonl`;
    await Deno.writeTextFile(old, "");
    await Deno.chmod(old, 0o644);
    const again = await run(QMP_TS, ["shell", qemu.address, "--log", old], "query-status\n");
    assert.equal(again.code, 0, again.stderr);
    assert.equal(octal((await Deno.stat(old)).mode!), "0600");
    assert.match(await Deno.readTextFile(old), /query-status/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runner with a VM holding a secret: JSON logs, JUnit system-out, failures and --record (0600 in 0700) hold none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-runner-secret-test-" });
  const SECRET = "t-runner-15";
  const ADDED = "t-runner-16";
  const STRAY = "t-runner-17";
  try {
    const file = `${dir}/secretive.playbook.ts`;
    await Deno.writeTextFile(
      file,
      `import { playbook } from "${PLAYBOOK_URL}";
export default playbook({
  name: "secretive",
  vm: { machine: "none", args: ["-object", "secret,id=s0,data=${SECRET}"] },
}, async (t) => {
  await t.step("read back", async () => {
    t.expect(await t.qmp.execute("human-monitor-command", { "command-line": "qom-get /objects/s0 data" }))
      .toBe('"${SECRET}"\\r\\n');
    await t.qmp.execute("object-add", { "qom-type": "secret", id: "s1", data: "${ADDED}" });
    // A stray rejection quoting a secret option: the runner prints it as a warning.
    Promise.reject(new Error("stray: -object secret,id=s9,data=${STRAY}"));
  });
  await t.step("fails with the secret as the actual value", async () => {
    t.expect(await t.qmp.execute("qom-get", { path: "/objects/s1", property: "data" })).toBe("other");
  });
});
`,
    );
    const rec = `${dir}/rec/sub`;
    const json = await run(
      PLAY_TS,
      [file, "--reporter", "json", "--record", rec],
      undefined,
      90_000,
    );
    assert.equal(json.code, 1, json.stderr);
    const report = JSON.parse(json.stdout);
    const pb = report.playbooks[0];
    assert.equal(pb.steps[0].status, "passed", "QEMU handed the real secret back");
    assert.equal(pb.steps[1].status, "failed");
    assert.ok(
      pb.logs.some((l: { message: string }) => l.message.includes("started pid")),
      JSON.stringify(pb.logs),
    );
    assertNone("JSON report", json.stdout, [SECRET, ADDED, STRAY]);
    assert.match(json.stderr, /unhandled promise rejection in a playbook: .*stray/);
    assertNone("stderr", json.stderr, [SECRET, ADDED, STRAY]);
    const recFile = `${rec}/secretive.jsonl`;
    assert.equal(octal((await Deno.stat(rec)).mode!), "0700");
    assert.equal(octal((await Deno.stat(`${dir}/rec`)).mode!), "0700");
    assert.equal(octal((await Deno.stat(recFile)).mode!), "0600");
    const recorded = await Deno.readTextFile(recFile);
    assert.match(recorded, /object-add/);
    assertNone("--record file", recorded, [SECRET, ADDED]);

    const junit = await run(PLAY_TS, [file, "--reporter", "junit"], undefined, 90_000);
    assert.equal(junit.code, 1, junit.stderr);
    assert.match(junit.stdout, /<system-out>[^]*started pid/);
    assertNone("JUnit report", junit.stdout + junit.stderr, [SECRET, ADDED, STRAY]);
    const pretty = await run(PLAY_TS, [file], undefined, 90_000);
    assert.equal(pretty.code, 1, pretty.stderr);
    assertNone("pretty report", pretty.stdout + pretty.stderr, [SECRET, ADDED, STRAY]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
