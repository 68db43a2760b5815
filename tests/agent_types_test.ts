// Tests for the generated guest agent types (lib/qapi/agent_types.ts) and their generator
// (scripts/gen-qapi-agent.ts, run as `deno task gen-qapi --agent`).
//
// 1. Type tests: `typeTests` must compile; every `@ts-expect-error` line must be a type error
//    (a misspelled command, a wrong argument, a wrong return type).
// 2. The parser and renderer on a small schema in QAPI source format.
// 3. Regeneration from the checked-in fixture is byte-identical and `deno fmt`-clean; every
//    command of the fixture is typed.

import assert from "node:assert/strict";
import type { AgentClient } from "../lib/agent/client.ts";
import {
  AGENT_NO_REPLY_COMMANDS,
  type AgentCommandName,
  type GuestExecStatus,
  type GuestFileWhence,
  type GuestNetworkInterface,
} from "../lib/qapi/agent_types.ts";
import {
  FIXTURE_AGENT_SCHEMA,
  generateAgentTypes,
  parseQapiSource,
  readAgentSchema,
} from "../scripts/gen-qapi-agent.ts";

const TYPES = new URL("../lib/qapi/agent_types.ts", import.meta.url);
const FIXTURE = new URL(`../${FIXTURE_AGENT_SCHEMA}`, import.meta.url);

// ---------------------------------------------------------------------------------------------
// 1. Type tests (compile-time only; never run)
// ---------------------------------------------------------------------------------------------

async function typeTests(agent: AgentClient): Promise<void> {
  await agent.execute("guest-ping");
  const id: number | bigint = await agent.execute("guest-sync-delimited", { id: 42 });
  const { pid } = await agent.execute("guest-exec", { path: "/bin/ls", arg: ["-l"] });
  const st: GuestExecStatus = await agent.execute("guest-exec-status", { pid });
  const code: number | bigint | undefined = st.exitcode;
  const handle: number | bigint = await agent.execute("guest-file-open", { path: "/etc/hosts" });
  const read = await agent.execute("guest-file-read", { handle, count: 4096 });
  const b64: string = read["buf-b64"];
  const whence: GuestFileWhence = "set";
  await agent.execute("guest-file-seek", { handle, offset: 0, whence });
  await agent.execute("guest-file-seek", { handle, offset: 0, whence: 1 });
  const nics: GuestNetworkInterface[] = await agent.execute("guest-network-get-interfaces");
  const mac: string | undefined = nics[0]["hardware-address"];
  const frozen: number | bigint = await agent.execute("guest-fsfreeze-freeze-list", {
    mountpoints: ["/"],
  });
  await agent.execute("guest-shutdown", { mode: "powerdown" });
  const name: AgentCommandName = "guest-get-osinfo";
  const info = await agent.info();
  const enabled: boolean = info.supported_commands[0].enabled;
  const smart = (await agent.execute("guest-get-disks"))[0].smart;
  if (smart?.type === "nvme") {
    const temp: number | bigint = smart.temperature;
    void temp;
  }

  // @ts-expect-error a misspelled command
  await agent.execute("guest-exce", { path: "/bin/ls" });
  // @ts-expect-error a QMP command is not an agent command
  await agent.execute("query-status");
  // @ts-expect-error required argument missing
  await agent.execute("guest-exec", {});
  // @ts-expect-error argument of the wrong type
  await agent.execute("guest-exec-status", { pid: "1" });
  // @ts-expect-error unknown argument
  await agent.execute("guest-ping", { verbose: true });
  // @ts-expect-error bad enum value (QGASeek is "set" | "cur" | "end")
  await agent.execute("guest-file-seek", { handle, offset: 0, whence: "middle" });
  // @ts-expect-error the return type is a number, not a string
  const wrong: string = await agent.execute("guest-file-open", { path: "/x" });
  // @ts-expect-error members are typed
  const notThere = st.stdout;
  void [id, code, b64, mac, frozen, name, enabled, wrong, notThere];
}
void typeTests;

// ---------------------------------------------------------------------------------------------
// 2. Parser and renderer
// ---------------------------------------------------------------------------------------------

const MINI = `# -*- Mode: Python -*-
# A comment with 'quotes' and { braces }

{ 'pragma': { 'doc-required': true } }

##
# @GuestColor:
#
# A color.
#
# @red: warm
# @blue: cool
#
# Since: 1.0
##
{ 'enum': 'GuestColor', 'data': [ 'red', 'blue' ] }

##
# @GuestPaint:
#
# @color: which color
# @coats: how many coats, counted
#         on two lines
#
# Since: 1.1
##
{ 'struct': 'GuestPaint',
  'data': { 'color': 'GuestColor', '*coats': 'int', 'tags': ['str'] } }

##
# @guest-paint:
#
# Paint the guest, see @GuestPaint.
#
# @paint: what to use
#
# Returns: number of walls painted
#
# Since: 1.2
##
{ 'command': 'guest-paint', 'data': { 'paint': 'GuestPaint' }, 'returns': 'int',
  'if': 'CONFIG_POSIX' }

##
# @guest-vanish:
#
# Leave.
##
{ 'command': 'guest-vanish', 'success-response': false }
`;

Deno.test("agent schema: the QAPI source parser keeps expressions and their docs", () => {
  const exprs = parseQapiSource(MINI);
  assert.equal(exprs.length, 5);
  assert.deepEqual(exprs[0].expr, { pragma: { "doc-required": true } });
  assert.deepEqual(exprs[2].expr, {
    struct: "GuestPaint",
    data: { color: "GuestColor", "*coats": "int", tags: ["str"] },
  });
  const doc = exprs[2].doc!;
  assert.equal(doc.symbol, "GuestPaint");
  assert.equal(doc.members.get("coats"), "how many coats, counted on two lines");
  assert.equal(doc.sections.get("since"), "1.1");
  assert.equal(exprs[3].doc?.sections.get("return"), "number of walls painted");
  assert.deepEqual(exprs[3].doc?.body, ["Paint the guest, see @GuestPaint."]);
  assert.throws(() => parseQapiSource("{ 'struct': 'X', 'data': { 'a': 'int' }"), /line 1/);
  assert.throws(() => parseQapiSource("{ 'a': 'b' }\n\n{ 'c' 'd' }"), /line 3: expected ':'/);
});

Deno.test("agent schema: rendering types commands, args, optionals, enums, no-reply commands", () => {
  const { text, stats } = generateAgentTypes(MINI);
  assert.deepEqual(stats, { commands: 2, types: 3 });
  assert.match(
    text,
    /\n {2}"guest-paint": \{ args: GuestPaintArguments; return: number \| bigint \};\n/,
  );
  assert.match(
    text,
    /\n {2}"guest-vanish": \{ args: Record<string, never>; return: Record<string, never> \};\n/,
  );
  assert.match(text, /\nexport type GuestColor = "red" \| "blue";\n/);
  assert.match(text, /\n {2}coats\?: number \| bigint;\n/);
  assert.match(text, /\n {2}tags: string\[\];\n/);
  assert.match(text, /Availability: POSIX guests only\./);
  assert.match(text, /Paint the guest, see `GuestPaint`\./);
  assert.match(text, /@since 1\.2/);
  assert.match(text, /export type AgentNoReplyCommand = "guest-vanish";/);
  assert.equal(generateAgentTypes(MINI).text, text, "deterministic");
  assert.throws(
    () => generateAgentTypes("{ 'command': 'x', 'returns': 'Nope' }"),
    /unknown type Nope/,
  );
});

// ---------------------------------------------------------------------------------------------
// 3. Regeneration from the fixture
// ---------------------------------------------------------------------------------------------

Deno.test("agent schema: regenerating from the fixture is byte-identical to lib/qapi/agent_types.ts", async () => {
  const source = await readAgentSchema(FIXTURE.pathname);
  const out = generateAgentTypes(source);
  assert.deepEqual(out.stats, { commands: 42, types: 66 });
  const current = await Deno.readTextFile(TYPES);
  assert.ok(
    out.text === current,
    "lib/qapi/agent_types.ts is stale: run deno task gen-qapi --agent",
  );
  // Every command of the schema is in AgentCommands.
  const names = parseQapiSource(source).flatMap((e) =>
    typeof e.expr.command === "string" ? [e.expr.command] : []
  );
  for (const n of names) assert.ok(current.includes(`  "${n}": {`), `${n} missing`);
  assert.deepEqual([...AGENT_NO_REPLY_COMMANDS].sort(), [
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-hybrid",
    "guest-suspend-ram",
  ]);
});

Deno.test("agent schema: the generated file is deno fmt-clean", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--check", "--line-width", "100", TYPES.pathname],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
});

Deno.test({
  name: "agent schema: the installed package's schema matches the fixture (when installed)",
  ignore: (() => {
    try {
      return !Deno.statSync("/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz").isFile;
    } catch {
      return true;
    }
  })(),
  async fn() {
    const installed = await readAgentSchema("/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz");
    assert.equal(installed, await readAgentSchema(FIXTURE.pathname));
  },
});
