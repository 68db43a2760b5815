/**
 * Every secret-carrying form QEMU 7.2 has, run through every sink function:
 * the redactor's own entry points, the client's transcript hook (live and
 * late replies), the shell's `--log` records, error classes (QmpCommandError,
 * LaunchError) as printed, the CLI's error formatter, and the runner's
 * reporters (json, junit, tap, pretty, failure text, transcript lines).
 *
 * Forms come from the 7.2 schema (tests/fixtures/qmp-schema-7.2.json) and
 * qemu-qmp-ref(7) / qemu(1): members `password` (set_password,
 * change-vnc-password), `secret` (sev-inject-launch-secret), `cookie` (curl),
 * `data` of `secret` objects, qom-set/qom-get of `data`, HMP and command-line
 * spellings, URL user info, legacy rbd `key=`. References to a secret object
 * (`key-secret`, `password-secret`, `passwordid`, `keyid`, `new-secret`, ...)
 * are ids, not secrets: they must stay readable.
 */
import assert from "node:assert/strict";
import type { QmpClient, TranscriptEntry } from "../lib/client.ts";
import { LaunchError, QmpCommandError } from "../lib/errors.ts";
import {
  forgetSecrets,
  MAX_DEPTH,
  redactCommandLine,
  redactDeep,
  REDACTED,
  redactMessage,
  redactReply,
  redactText,
  TOO_DEEP,
} from "../lib/redact.ts";
import type {
  Failure,
  PlaybookResult,
  RunSummary,
  TranscriptRecord,
} from "../lib/runner/results.ts";
import { createReporter } from "../lib/runner/reporters.ts";
import { failureText, formatTranscriptLine } from "../lib/runner/report_text.ts";
import { stringifyJson } from "../lib/json.ts";
import { jsonReport } from "../lib/runner/reporter_json.ts";
import { junitReport } from "../lib/runner/reporter_junit.ts";
import { tapReport } from "../lib/runner/reporter_tap.ts";
import { formatError } from "../scripts/cli/common.ts";
import { redactLogRecord } from "../scripts/cli/shell.ts";
import { type FakePeer, openMemoryClient } from "./helpers/memory_transport.ts";

type Msg = Record<string, unknown>;

/** A QMP command that carries a secret in its arguments. */
interface CommandRow {
  form: string;
  execute: string;
  arguments: Msg;
  secrets: string[];
  keep?: string[];
}
/** A reply that carries a secret read back from QEMU. */
interface ReplyRow {
  form: string;
  execute: string;
  arguments: Msg;
  reply: unknown;
  secrets: string[];
}
/** Free text (QEMU's stderr, HMP lines, log lines) or a command line. */
interface TextRow {
  form: string;
  argv?: string[];
  text?: string;
  secrets: string[];
  keep?: string[];
}

const COMMANDS: CommandRow[] = [
  {
    form: "QMP object-add secret data",
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "s0", data: "t-objadd-1", format: "raw" },
    secrets: ["t-objadd-1"],
    keep: ['"s0"', '"raw"'],
  },
  {
    form: "QMP object-add secret data (base64) with keyid/iv (references kept)",
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "s1", data: "dC1iNjQtMg==", keyid: "m0", iv: "aXY=" },
    secrets: ["dC1iNjQtMg=="],
    keep: ['"m0"', '"aXY="'],
  },
  {
    form: "QMP object-add secret_keyring (serial is a reference)",
    execute: "object-add",
    arguments: { "qom-type": "secret_keyring", id: "k0", serial: 12345 },
    secrets: [],
    keep: ["12345"],
  },
  {
    form: "pre-6.0 object-add props.data",
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "s2", props: { data: "t-props-3" } },
    secrets: ["t-props-3"],
  },
  {
    form: "QMP set_password vnc",
    execute: "set_password",
    arguments: { protocol: "vnc", password: "t-setpw-4", connected: "keep" },
    secrets: ["t-setpw-4"],
    keep: ['"keep"'],
  },
  {
    form: "QMP set_password spice",
    execute: "set_password",
    arguments: { protocol: "spice", password: "t-setpw-5" },
    secrets: ["t-setpw-5"],
  },
  {
    form: "QMP change-vnc-password",
    execute: "change-vnc-password",
    arguments: { password: "t-chvnc-6" },
    secrets: ["t-chvnc-6"],
  },
  {
    form: "QMP expire_password (no secret)",
    execute: "expire_password",
    arguments: { protocol: "vnc", time: "never" },
    secrets: [],
    keep: ['"never"'],
  },
  {
    form: "QMP qom-set of a secret's data",
    execute: "qom-set",
    arguments: { path: "/objects/s0", property: "data", value: "t-qomset-7" },
    secrets: ["t-qomset-7"],
    keep: ['"/objects/s0"'],
  },
  {
    form: "QMP sev-inject-launch-secret secret",
    execute: "sev-inject-launch-secret",
    arguments: { "packet-header": "aGVhZA==", secret: "t-sev-8" },
    secrets: ["t-sev-8"],
    keep: ['"aGVhZA=="'],
  },
  {
    form: "blockdev-add luks key-secret (reference kept)",
    execute: "blockdev-add",
    arguments: { driver: "luks", "node-name": "d0", "key-secret": "sec0", file: "f0" },
    secrets: [],
    keep: ['"sec0"'],
  },
  {
    form: "blockdev-add iscsi password-secret (reference kept)",
    execute: "blockdev-add",
    arguments: {
      driver: "iscsi",
      "node-name": "i0",
      transport: "tcp",
      portal: "127.0.0.1",
      target: "iqn.x",
      user: "u0",
      "password-secret": "isec0",
    },
    secrets: [],
    keep: ['"isec0"', '"u0"'],
  },
  {
    form: "blockdev-add https: cookie (value), cookie-secret/password-secret (references)",
    execute: "blockdev-add",
    arguments: {
      driver: "https",
      "node-name": "h0",
      url: "https://127.0.0.1/x.img",
      cookie: "t-cookie-9",
      "cookie-secret": "csec0",
      username: "bob",
      "password-secret": "hsec0",
      "proxy-password-secret": "psec0",
    },
    secrets: ["t-cookie-9"],
    keep: ['"csec0"', '"hsec0"', '"psec0"', '"bob"'],
  },
  {
    form: "blockdev-add https: password in the URL user info",
    execute: "blockdev-add",
    arguments: { driver: "https", "node-name": "h1", url: "https://bob:t-urlpw-10@127.0.0.1/x" },
    secrets: ["t-urlpw-10"],
    keep: ["bob:"],
  },
  {
    form: "x-blockdev-amend luks new-secret/old-secret (references kept)",
    execute: "x-blockdev-amend",
    arguments: {
      "job-id": "j0",
      "node-name": "d0",
      options: { driver: "luks", state: "active", "new-secret": "ns0", "old-secret": "os0" },
    },
    secrets: [],
    keep: ['"ns0"', '"os0"'],
  },
  {
    form: "object-add tls-creds-x509 passwordid (reference kept)",
    execute: "object-add",
    arguments: { "qom-type": "tls-creds-x509", id: "tls0", dir: "/pki", passwordid: "tsec0" },
    secrets: [],
    keep: ['"tsec0"'],
  },
  {
    form: "migrate-set-parameters tls-creds (reference kept)",
    execute: "migrate-set-parameters",
    arguments: { "tls-creds": "tls0", "tls-hostname": "h", "tls-authz": "authz0" },
    secrets: [],
    keep: ['"tls0"', '"authz0"'],
  },
  {
    form: "any member ending in -password",
    execute: "x-something",
    arguments: { nested: [{ "x-password": "t-xpw-11", "user-passwd": "t-xpw-12" }] },
    secrets: ["t-xpw-11", "t-xpw-12"],
  },
  {
    form: "HMP object_add secret QemuOpts",
    execute: "human-monitor-command",
    arguments: { "command-line": "object_add secret,id=s3,data=t-hmpopt-13,format=raw" },
    secrets: ["t-hmpopt-13"],
    keep: ["format=raw", "id=s3"],
  },
  {
    form: "HMP object_add secret QemuOpts with ,, escapes",
    execute: "human-monitor-command",
    arguments: { "command-line": "object_add secret,id=s4,data=t-hmp,,comma-14,format=raw" },
    secrets: ["t-hmp", "comma-14"],
    keep: ["format=raw"],
  },
  {
    form: "HMP object_add secret JSON form",
    execute: "human-monitor-command",
    arguments: {
      "command-line": `object_add {"qom-type":"secret","id":"s5","data":"t-hmpjson-15"}`,
    },
    secrets: ["t-hmpjson-15"],
    keep: ["s5"],
  },
  {
    form: "HMP set_password",
    execute: "human-monitor-command",
    arguments: { "command-line": "set_password vnc t-hmpset-16 keep" },
    secrets: ["t-hmpset-16"],
    keep: ["keep"],
  },
  {
    form: "HMP set_password, quoted",
    execute: "human-monitor-command",
    arguments: { "command-line": `set_password spice "t-hmp quoted-17"` },
    secrets: ["t-hmp quoted-17", "quoted-17"],
  },
  {
    form: "HMP change vnc password",
    execute: "human-monitor-command",
    arguments: { "command-line": "change vnc password t-hmpchg-18" },
    secrets: ["t-hmpchg-18"],
  },
  {
    form: "HMP qom-set data",
    execute: "human-monitor-command",
    arguments: { "command-line": "qom-set /objects/s0 data t-hmpqs-19" },
    secrets: ["t-hmpqs-19"],
    keep: ["/objects/s0"],
  },
  {
    form: "HMP qom-set -j data",
    execute: "human-monitor-command",
    arguments: { "command-line": `qom-set -j /objects/s0 data "t-hmpqsj-20"` },
    secrets: ["t-hmpqsj-20"],
  },
  {
    form: "HMP drive_add with iscsi URL password",
    execute: "human-monitor-command",
    arguments: { "command-line": "drive_add 0 if=none,file=iscsi://u%t-iscsi-21@127.0.0.1/i/0" },
    secrets: ["t-iscsi-21"],
  },
  {
    form: "HMP expire_password (no secret)",
    execute: "human-monitor-command",
    arguments: { "command-line": "expire_password vnc never" },
    secrets: [],
    keep: ["expire_password vnc never"],
  },
];

const REPLIES: ReplyRow[] = [
  {
    form: "QMP qom-get of a secret's data",
    execute: "qom-get",
    arguments: { path: "/objects/s0", property: "data" },
    reply: "t-qomget-30",
    secrets: ["t-qomget-30"],
  },
  {
    form: "HMP qom-get of a secret's data",
    execute: "human-monitor-command",
    arguments: { "command-line": "qom-get /objects/s0 data" },
    reply: '"t-hmpqg-31"\r\n',
    secrets: ["t-hmpqg-31"],
  },
];

const TEXTS: TextRow[] = [
  {
    form: "-object secret QemuOpts",
    argv: ["qemu-system-x86_64", "-object", "secret,id=s0,data=t-argv-40,format=raw"],
    secrets: ["t-argv-40"],
    keep: ["format=raw"],
  },
  {
    form: "-object secret JSON",
    argv: ["qemu-system-x86_64", "-object", `{"qom-type":"secret","id":"s0","data":"t-argv-41"}`],
    secrets: ["t-argv-41"],
    keep: ["qom-type", "s0"],
  },
  {
    form: "-spice password= (deprecated in 7.2, still accepted)",
    argv: ["qemu-system-x86_64", "-spice", "port=5900,password=t-spice-42,disable-ticketing=off"],
    secrets: ["t-spice-42"],
    keep: ["port=5900"],
  },
  {
    form: "-iscsi password= (password-secret= is a reference)",
    argv: ["qemu-system-x86_64", "-iscsi", "user=u,password=t-iscsi-43,password-secret=isec1"],
    secrets: ["t-iscsi-43"],
    keep: ["password-secret=isec1"],
  },
  {
    form: "-drive file=iscsi://user%password@ and https://user:password@",
    argv: [
      "qemu-system-x86_64",
      "-drive",
      "file=iscsi://u%t-iscsi-44@127.0.0.1/iqn.x/0,if=none",
      "-drive",
      "file=https://bob:t-url-45@127.0.0.1/x.img,if=none",
    ],
    secrets: ["t-iscsi-44", "t-url-45"],
    keep: ["127.0.0.1/iqn.x/0"],
  },
  {
    form: "-drive rbd:...:key= (legacy file name)",
    argv: ["qemu-system-x86_64", "-drive", "file=rbd:pool/img:id=admin:key=t-rbd-46:conf=/c"],
    secrets: ["t-rbd-46"],
    keep: [":conf=/c"],
  },
  {
    form: "-vnc password=on (a boolean, kept) and -blockdev key-secret= (reference, kept)",
    argv: [
      "qemu-system-x86_64",
      "-vnc",
      ":0,password=on",
      "-blockdev",
      "driver=luks,key-secret=k9",
    ],
    secrets: [],
    keep: ["password=on", "key-secret=k9"],
  },
  {
    form: "references on the command line (secret file=, secret_keyring serial=, passwordid=)",
    argv: [
      "qemu-system-x86_64",
      "-object",
      "secret,id=s0,file=/run/pw.txt,format=raw",
      "-object",
      "secret_keyring,id=k0,serial=1234567",
      "-object",
      "tls-creds-x509,id=tls0,dir=/pki,passwordid=s0,endpoint=server",
    ],
    secrets: [],
    keep: ["file=/run/pw.txt", "serial=1234567", "passwordid=s0"],
  },
  {
    form: "QEMU stderr repeating -object secret QemuOpts",
    text: "qemu-system-x86_64: -object secret,id=s0,data=t-stderr-47,bogus=1: " +
      "Invalid parameter 'bogus'",
    secrets: ["t-stderr-47"],
    keep: ["Invalid parameter 'bogus'"],
  },
  {
    form: "QEMU stderr repeating -object secret JSON",
    text: `qemu-system-x86_64: -object {"qom-type":"secret","id":"s0","data":"t-stderr-48",` +
      `"bogus":1}: Parameter 'bogus' is unexpected`,
    secrets: ["t-stderr-48"],
  },
  {
    form: "launch log line",
    text: "vm: started pid 42: qemu-system-x86_64 -name vm -object secret,id=s0,data=t-log-49",
    secrets: ["t-log-49"],
    keep: ["started pid 42"],
  },
  {
    form: "a logged transcript line (JSON inside JSON)",
    text: `{"execute":"human-monitor-command","arguments":{"command-line":"object_add ` +
      `{\\"qom-type\\":\\"secret\\",\\"id\\":\\"s5\\",\\"data\\":\\"t-nested-50\\"}"}}`,
    secrets: ["t-nested-50"],
  },
  {
    form: "a logged qom-set message",
    text: `{"execute":"qom-set","arguments":{"path":"/objects/s0","property":"data",` +
      `"value":"t-logqs-51"}}`,
    secrets: ["t-logqs-51"],
  },
  {
    form: "qmp shell key=value lines (as --echo prints them)",
    text: "(QEMU) object-add qom-type=secret id=s0 data=t-kv-55\n" +
      "(QEMU) set_password protocol=vnc password=t-kv-56\n" +
      "(QEMU) change-vnc-password password=t-kv-57\n" +
      "(QEMU) qom-set path=/objects/s0 property=data value=t-kv-58",
    secrets: ["t-kv-55", "t-kv-56", "t-kv-57", "t-kv-58"],
    keep: ["set_password protocol=vnc password=", "property=data value="],
  },
  {
    form: "HMP lines in text",
    text: "ran: set_password vnc t-txt-52\nthen: change vnc password t-txt-53\n" +
      "then: qom-set /objects/s0 data t-txt-54",
    secrets: ["t-txt-52", "t-txt-53", "t-txt-54"],
  },
];

const TIME = "2026-01-01T00:00:00.000Z";

function assertClean(what: string, text: string, row: { secrets: string[]; keep?: string[] }) {
  for (const s of row.secrets) {
    assert.ok(!text.includes(s), `${what}: leaks ${JSON.stringify(s)}:\n${text}`);
  }
  for (const k of row.keep ?? []) {
    assert.ok(text.includes(k), `${what}: lost ${JSON.stringify(k)} (over-redacted):\n${text}`);
  }
}

/** A run summary holding `raw` content in every place a report prints. */
function summaryWith(records: TranscriptRecord[], text: string): RunSummary {
  const failure: Failure = {
    name: "StepFailedError",
    message: text,
    step: "s",
    causes: [text],
    transcript: records,
    consoleTail: text,
    qemuExit: `exited with code 1; stderr:\n${text}`,
    expected: text,
    actual: text,
    diff: text,
  };
  const result: PlaybookResult = {
    name: "pb",
    status: "failed",
    durationMs: 1,
    steps: [{
      name: "s",
      path: ["s"],
      status: "failed",
      durationMs: 1,
      failure,
      steps: [],
    }],
    failure,
    cleanupFailures: [failure],
    logs: [{ time: TIME, path: ["s"], source: "vm", message: text }],
    kept: [],
  };
  return {
    results: [result],
    durationMs: 1,
    interrupted: false,
    counts: {
      playbooks: { passed: 0, failed: 1, skipped: 0, interrupted: 0, flaky: 0 },
      steps: { passed: 0, failed: 1, skipped: 0 },
    },
    ok: false,
  };
}

/** Every reporter's output for `summary`, live callbacks included. */
async function reports(summary: RunSummary): Promise<Record<string, string>> {
  const out: Record<string, string> = {
    json: stringifyJson(jsonReport(summary)),
    junit: junitReport(summary),
    tap: tapReport(summary),
    failureText: failureText(summary.results[0].failure!),
    transcriptLines: summary.results[0].failure!.transcript.map((r) => formatTranscriptLine(r))
      .join("\n"),
  };
  for (const name of ["pretty", "json", "junit", "tap"] as const) {
    let text = "";
    const sink = { stdout: (t: string) => (text += t), stderr: (t: string) => (text += t) };
    const r = createReporter(name, { output: sink, color: false, live: false });
    const info = { index: 0, name: "pb" };
    r.runStart?.([{ name: "pb" }]);
    r.playbookStart?.(info);
    r.log?.(info, summary.results[0].logs[0]);
    r.playbookEnd?.(info, summary.results[0]);
    await r.runEnd(summary);
    out[`createReporter(${name})`] = text;
  }
  return out;
}

/** Runs `fn` with a client whose transcript is collected; the peer runs `serve`. */
async function withTranscript(
  serve: (peer: FakePeer) => Promise<void>,
  fn: (client: QmpClient) => Promise<void>,
): Promise<TranscriptEntry[]> {
  const log: TranscriptEntry[] = [];
  const { client, peer } = await openMemoryClient({
    address: "mem",
    transcript: (e) => log.push(e),
  });
  const served = serve(peer);
  try {
    await fn(client);
    await served;
  } finally {
    await client.close();
    await peer.done();
  }
  return log;
}

Deno.test("redact table: QMP commands through every sink", async (t) => {
  for (const row of COMMANDS) {
    await t.step(row.form, async () => {
      const msg = { execute: row.execute, arguments: row.arguments, id: 7 };
      const sinks: Record<string, () => string | Promise<string>> = {
        redactMessage: () => JSON.stringify(redactMessage(msg)),
        redactDeep: () => JSON.stringify(redactDeep(msg)),
        transcript: async () => {
          let received: Msg | undefined;
          const log = await withTranscript(async (peer) => {
            received = await peer.recv();
            peer.reply(received, {});
          }, async (client) => {
            await client.executeRaw(row.execute, row.arguments);
          });
          // The server got the real values.
          assert.deepEqual(received!.arguments, row.arguments);
          return JSON.stringify(log.map((e) => e.message));
        },
        "shell --log record": () =>
          JSON.stringify(redactLogRecord({
            time: TIME,
            execute: row.execute,
            arguments: row.arguments,
            return: {},
          })),
        "QmpCommandError (inspected)": () =>
          Deno.inspect(
            new QmpCommandError(row.execute, row.arguments, "GenericError", "it failed"),
            { depth: 10 },
          ),
        "reporters (raw transcript record)": async () => {
          const rec: TranscriptRecord = { time: TIME, vm: "vm", direction: "send", message: msg };
          return Object.entries(await reports(summaryWith([rec], "ok"))).map(([k, v]) =>
            `${k}: ${v}`
          ).join("\n");
        },
      };
      for (const [sink, run] of Object.entries(sinks)) {
        forgetSecrets(); // each sink must recognize the form by itself
        assertClean(`${row.form} → ${sink}`, await run(), row);
      }
    });
  }
});

Deno.test("redact table: secrets read back from QEMU, live and late replies", async (t) => {
  for (const row of REPLIES) {
    await t.step(row.form, async () => {
      const sinks: Record<string, () => string | Promise<string>> = {
        redactReply: () =>
          JSON.stringify(redactReply({ return: row.reply, id: 3 }, row.execute, row.arguments)),
        transcript: async () => {
          const log = await withTranscript(async (peer) => {
            peer.reply(await peer.recv(), row.reply);
          }, async (client) => {
            assert.equal(await client.executeRaw(row.execute, row.arguments), row.reply);
          });
          return JSON.stringify(log.map((e) => e.message));
        },
        "transcript, late reply": async () => {
          const log = await withTranscript(async (peer) => {
            const req = await peer.recv();
            await new Promise((r) => setTimeout(r, 80)); // after the client gave up
            peer.reply(req, row.reply);
            // A second command proves the late reply was read (and recorded) first.
            peer.reply(await peer.recv(), {});
          }, async (client) => {
            await assert.rejects(client.executeRaw(row.execute, row.arguments, { timeout: 20 }));
            await client.executeRaw("query-status");
          });
          const late = log.filter((e) => e.direction === "recv" && e.message.id === 1);
          assert.equal(late.length, 1, "the late reply is recorded");
          return JSON.stringify(log.map((e) => e.message));
        },
        "shell --log record": () =>
          JSON.stringify(redactLogRecord({
            time: TIME,
            execute: row.execute,
            arguments: row.arguments,
            return: row.reply,
          })),
      };
      for (const [sink, run] of Object.entries(sinks)) {
        forgetSecrets();
        assertClean(`${row.form} → ${sink}`, await run(), row);
      }
    });
  }
});

Deno.test("redact table: command lines and free text through every sink", async (t) => {
  for (const row of TEXTS) {
    await t.step(row.form, async () => {
      const text = row.text ?? row.argv!.join(" ");
      const sinks: Record<string, () => string | Promise<string>> = {
        redactText: () => redactText(text),
        "LaunchError (inspected)": () =>
          Deno.inspect(
            new LaunchError(`${text} failed`, {
              exitCode: 1,
              stderr: text,
              commandLine: row.argv ?? ["qemu-system-x86_64", text],
            }),
            { depth: 10 },
          ),
        "LaunchError, CLI formatError": () =>
          formatError("qmp", new LaunchError("QEMU failed", { stderr: text, commandLine: [] })) +
          "\n" +
          formatError(
            "qmp",
            new LaunchError(text, { stderr: text, commandLine: row.argv ?? [text] }),
            true,
          ),
        "QmpCommandError desc echoing it": () =>
          Deno.inspect(new QmpCommandError("x", {}, "GenericError", text)),
        "reporters (log line, failure, stderr tail)": async () =>
          Object.entries(await reports(summaryWith([], text))).map(([k, v]) => `${k}: ${v}`)
            .join("\n"),
      };
      if (row.argv) sinks.redactCommandLine = () => JSON.stringify(redactCommandLine(row.argv!));
      for (const [sink, run] of Object.entries(sinks)) {
        forgetSecrets();
        assertClean(`${row.form} → ${sink}`, await run(), row);
      }
    });
  }
});

Deno.test("redact: a value seen as a secret is redacted wherever it turns up later", () => {
  forgetSecrets();
  const secret = "t-remembered-60";
  redactMessage({
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "s", data: secret },
  });
  assert.equal(
    redactText(`Error: something echoed ${secret} back`),
    `Error: something echoed ${REDACTED} back`,
  );
  forgetSecrets();
  assert.equal(redactText(`echo ${secret}`), `echo ${secret}`);
});

Deno.test("redact: nothing secret is left alone, inputs are not modified", () => {
  const msg = {
    execute: "transaction",
    arguments: { actions: [{ type: "block-dirty-bitmap-add", data: { node: "n0", name: "b1" } }] },
  };
  assert.deepEqual(redactMessage(msg), msg);
  const event = { event: "X", data: { secretive: 1, data: "ok", password: true } };
  assert.deepEqual(redactMessage(event), event);
  const args = { "qom-type": "secret", id: "s", data: "t-untouched-61" };
  redactMessage({ arguments: args });
  assert.equal(args.data, "t-untouched-61");
  assert.equal(
    redactText("-device loader,addr=0x1000,data=0x12"),
    "-device loader,addr=0x1000,data=0x12",
  );
});

Deno.test("redact: deep and cyclic input neither overflows nor loops", () => {
  let deep: Msg = { "qom-type": "secret", data: "t-deep-62" };
  for (let i = 0; i < 100_000; i++) deep = { a: deep };
  const out = JSON.stringify(redactMessage({ return: deep }));
  assert.ok(!out.includes("t-deep-62"));
  assert.ok(out.includes(TOO_DEEP), "cut off past MAX_DEPTH, conservatively");
  let within: Msg = { "qom-type": "secret", data: "t-deep-65" };
  for (let i = 0; i < MAX_DEPTH - 3; i++) within = { a: within };
  const kept = JSON.stringify(redactMessage({ return: within }));
  assert.ok(!kept.includes("t-deep-65") && kept.includes(REDACTED) && !kept.includes(TOO_DEEP));
  const cyclic: Msg = { password: "t-cycle-63" };
  cyclic.self = cyclic;
  const copy = redactMessage(cyclic);
  assert.equal(copy.password, REDACTED);
  // Unrolled a little, then the cycle is closed in the copy too.
  let c: Msg = copy, hops = 0;
  while (c.self !== c && hops < 5000) [c, hops] = [c.self as Msg, hops + 1];
  assert.equal(c.self, c, "the copy's cycle closes");
  assert.equal(c.password, REDACTED);
  // Two references to itself per level would double at every level without tracking.
  const twice: Msg = { secret: "t-cycle-66" };
  twice.x = twice;
  twice.y = twice;
  assert.ok(!Deno.inspect(redactMessage(twice), { depth: 3 }).includes("t-cycle-66"));
  // "__proto__" from JSON stays an own member of the copy.
  const parsed = JSON.parse('{"__proto__": {"password": "t-proto-64"}}');
  const safe = redactMessage(parsed);
  assert.equal(Object.getPrototypeOf(safe), Object.prototype);
  assert.deepEqual(Object.keys(safe), ["__proto__"]);
  assert.ok(!JSON.stringify(safe).includes("t-proto-64"));
});
