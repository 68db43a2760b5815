// Tests for the generated QAPI types (lib/qapi/types.ts) and their generator (scripts/gen-qapi.ts).
//
// 1. Type tests: `typeTests` must compile; every `@ts-expect-error` line must be a type error.
// 2. Coverage: every command, event and type reachable from them in the saved 7.2 schema
//    (tests/fixtures/qmp-schema-7.2.json) is checked against the generated file's text.
// 3. Regeneration from the fixture is byte-identical and `deno fmt`-clean (needs QEMU's
//    qemu-qmp-ref(7); skipped when it is not installed).

import assert from "node:assert/strict";
import type {
  BlockdevOptions,
  CommandArgs,
  CommandArgsParam,
  CommandName,
  CommandReturn,
  EventData,
  EventMessage,
  EventName,
  JobStatus,
  QmpCommands,
  RunState,
  ShutdownCause,
  StatusInfo,
} from "../lib/qapi/types.ts";
import {
  findManPage,
  generate,
  parseManPage,
  readManPage,
  recoverNames,
  Schema,
  type SchemaEntry,
} from "../scripts/gen-qapi.ts";

// ---------------------------------------------------------------------------------------------
// 1. Type tests (compile-time only; the function is never run)
// ---------------------------------------------------------------------------------------------

declare function execute<K extends CommandName>(
  cmd: K,
  ...a: CommandArgsParam<K>
): Promise<CommandReturn<K>>;
declare function on<E extends EventName>(event: E, fn: (data: EventData<E>) => void): void;

async function typeTests(): Promise<void> {
  // Commands without arguments: no argument, or an empty object.
  const st: StatusInfo = await execute("query-status");
  const state: RunState = st.status;
  const running: boolean = st.running;
  await execute("stop");
  await execute("stop", {});
  const v = await execute("query-version");
  const major: number | bigint = v.qemu.major; // QAPI int: a bigint beyond 2^53
  const blocks = await execute("query-block");
  const first: string = blocks[0].device;
  const unknownValue: unknown = await execute("qom-get", { path: "/machine", property: "type" });
  const hmp: string = await execute("human-monitor-command", { "command-line": "info status" });
  const nothing: Record<string, never> = await execute("cont");
  await execute("qmp_capabilities", { enable: ["oob"] });
  await execute("device_add", { driver: "usb-tablet", id: "tab0" });
  await execute("device_add", { driver: "e1000", id: "n0", mac: "52:54:00:12:34:56" }); // open
  await execute("device_del", { id: "tab0" });
  const args: CommandArgs<"migrate"> = { uri: "exec:cat > /dev/null" };
  await execute("migrate", args);

  // blockdev-add: BlockdevOptions is a flat union discriminated by "driver".
  await execute("blockdev-add", { driver: "null-co", "node-name": "n0" });
  await execute("blockdev-add", { driver: "null-aio", "node-name": "n1", size: 1 << 20 });
  await execute("blockdev-add", { driver: "qcow2", "node-name": "q0", file: "n0" });
  await execute("blockdev-add", {
    driver: "qcow2",
    "node-name": "q1",
    file: { driver: "file", filename: "/tmp/disk.qcow2" },
  });
  const opts: BlockdevOptions = { driver: "raw", file: "n0" };
  if (opts.driver === "raw") {
    const offset: number | bigint | undefined = opts.offset; // narrowed to BlockdevOptionsRaw
    void offset;
  }
  // QAPI integers take a number or an exact bigint (uint64 beyond 2^53).
  await execute("migrate-set-parameters", { "max-bandwidth": 1024 });
  await execute("migrate-set-parameters", { "max-bandwidth": 9007199254740993n });
  await execute("blockdev-add", { driver: "null-co", "node-name": "n4", size: 1n << 60n });
  const mbps: number | undefined = (await execute("query-migrate")).ram?.mbps; // a double
  void mbps;

  // Events.
  on("SHUTDOWN", (d) => {
    const guest: boolean = d.guest;
    const reason: ShutdownCause = d.reason;
    void [guest, reason];
  });
  on("STOP", (d) => {
    const none: undefined = d;
    void none;
  });
  on("JOB_STATUS_CHANGE", (d) => {
    const s: JobStatus = d.status;
    void s;
  });
  const msg = {} as EventMessage;
  if (msg.event === "DEVICE_DELETED") {
    const path: string = msg.data.path;
    void path;
  }

  // --- everything below must be a type error -------------------------------------------------
  // @ts-expect-error misspelled command
  await execute("query-stauts");
  // @ts-expect-error unknown argument for a command without arguments
  await execute("stop", { force: true });
  // @ts-expect-error wrong argument type
  await execute("human-monitor-command", { "command-line": 5 });
  // @ts-expect-error missing required argument
  await execute("human-monitor-command", {});
  // @ts-expect-error device_add needs "driver"
  await execute("device_add", { id: "tab1" });
  // @ts-expect-error missing arguments altogether
  await execute("device_del");
  // @ts-expect-error unknown argument
  await execute("device_del", { id: "x", force: true });
  // @ts-expect-error qcow2 needs "file"
  await execute("blockdev-add", { driver: "qcow2", "node-name": "q2" });
  // @ts-expect-error null-co has no "file"
  await execute("blockdev-add", { driver: "null-co", "node-name": "n2", file: "n0" });
  // @ts-expect-error unknown driver
  await execute("blockdev-add", { driver: "nope", "node-name": "n3" });
  // @ts-expect-error a QAPI int read back may be a bigint, not only a number
  const _bw: number = (await execute("query-migrate-parameters"))["max-bandwidth"]!;
  // @ts-expect-error enum value out of range
  await execute("qmp_capabilities", { enable: ["bogus"] });
  // @ts-expect-error wrong event name
  on("SHUTDOWNN", () => {});
  // @ts-expect-error STOP has no data
  on("STOP", (d) => d.reason);
  // @ts-expect-error wrong return-member access
  void st.state;
  // @ts-expect-error RunState is a closed set of strings
  const badState: RunState = "sleeping";
  // @ts-expect-error query-status returns an object, not an array
  void (await execute("query-status")).length;
  if (msg.event === "STOP") {
    // @ts-expect-error STOP messages carry no data
    void msg.data;
  }

  void [state, running, major, first, unknownValue, hmp, nothing, badState];
}

Deno.test("type tests compile (checked by deno check / deno test)", () => {
  assert.equal(typeof typeTests, "function");
  const names: CommandName[] = ["query-status", "blockdev-add"];
  const qc: keyof QmpCommands = names[0];
  assert.equal(qc, "query-status");
});

// ---------------------------------------------------------------------------------------------
// 2. Coverage: the generated file against the saved schema
// ---------------------------------------------------------------------------------------------

const FIXTURE = new URL("./fixtures/qmp-schema-7.2.json", import.meta.url);
const VERSION_FIXTURE = new URL("./fixtures/qmp-version-7.2.json", import.meta.url);
const TYPES = new URL("../lib/qapi/types.ts", import.meta.url);

const entries: SchemaEntry[] = JSON.parse(await Deno.readTextFile(FIXTURE));
const typesText = await Deno.readTextFile(TYPES);

interface TsMember {
  optional: boolean;
  type: string;
}

/**
 * Splits union text at top-level " | " (tag literals hold a single value, never " | "); a QAPI
 * int is the two types `number | bigint`, kept as one branch (also inside `(...)[]`).
 */
function splitUnion(text: string): string[] {
  const parts = text.replace(/\(number \| bigint\)/g, "(INT)").split(" | ");
  const out: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    if (parts[i] === "number" && parts[i + 1] === "bigint") out.push(`number | bigint`), i++;
    else out.push(parts[i].replace("(INT)", "(number | bigint)"));
  }
  return out;
}

/** A small reader for the generated file's fixed layout. */
class GeneratedFile {
  interfaces = new Map<string, Map<string, TsMember>>();
  aliases = new Map<string, string[]>();
  commands = new Map<string, { args: string; ret: string }>();
  events = new Map<string, string>();

  constructor(text: string) {
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i];
      let m = /^export interface (\w+) \{$/.exec(l);
      if (m) {
        const body: string[] = [];
        while (lines[++i] !== "}") body.push(lines[i]);
        if (m[1] === "QmpCommands") this.readCommands(body.join("\n"));
        else if (m[1] === "QmpEvents") this.readEvents(body);
        else this.interfaces.set(m[1], GeneratedFile.members(body));
        continue;
      }
      m = /^export type (\w+) =(.*)$/.exec(l);
      if (m) {
        let text = m[2];
        while (!text.endsWith(";")) text += "\n" + lines[++i];
        const members = text.slice(0, -1).split("\n").map((s) => s.trim().replace(/^\| /, ""))
          .filter((s) => s !== "")
          .flatMap(splitUnion);
        this.aliases.set(m[1], members);
      }
    }
  }

  static members(body: string[]): Map<string, TsMember> {
    const out = new Map<string, TsMember>();
    for (const l of body) {
      const m = /^ {2}("[^"]+"|[\w$]+)(\??): (.*);$/.exec(l);
      if (m) out.set(m[1].replace(/"/g, ""), { optional: m[2] === "?", type: m[3] });
    }
    return out;
  }

  readCommands(body: string): void {
    for (
      const m of body.matchAll(
        /^ {2}("[^"]+"|\w+): \{\s*args: ([^;]+);\s*return: ([^;]+);?\s*\};$/gm,
      )
    ) {
      this.commands.set(m[1].replace(/"/g, ""), { args: m[2].trim(), ret: m[3].trim() });
    }
  }

  readEvents(body: string[]): void {
    for (const [name, m] of GeneratedFile.members(body)) this.events.set(name, m.type);
  }
}

const gen = new GeneratedFile(typesText);
const schema = new Schema(entries);
const BUILTIN_TS: Record<string, string> = {
  str: "string",
  int: "number | bigint",
  number: "number",
  bool: "boolean",
  null: "null",
  any: "unknown",
};

/** Structurally check that TypeScript type text `ts` represents introspected type `id`. */
function checkType(ts: string, id: string, where: string, seen = new Set<string>()): void {
  const pair = `${ts}=${id}`;
  if (seen.has(pair)) return;
  seen.add(pair);
  const arr = /^\[(.*)\]$/.exec(id);
  if (arr) {
    assert.ok(ts.endsWith("[]"), `${where}: ${ts} should be an array (${id})`);
    return checkType(ts.slice(0, -2).replace(/^\((.*)\)$/, "$1"), arr[1], `${where}[]`, seen);
  }
  if (id === "0") {
    assert.equal(ts, "Record<string, never>", `${where}: empty object`);
    return;
  }
  const e = schema.get(id);
  assert.doesNotMatch(ts, /^T?\d+$/, `${where}: numeric type name ${ts}`);
  switch (e["meta-type"]) {
    case "builtin":
      assert.equal(ts, BUILTIN_TS[e.name], `${where}: builtin ${e.name}`);
      return;
    case "enum":
      assert.deepEqual(gen.aliases.get(ts), e.values.map((v) => JSON.stringify(v)), `${where}`);
      return;
    case "alternate": {
      const branches = gen.aliases.get(ts);
      assert.ok(branches, `${where}: alternate ${ts} missing`);
      assert.equal(branches.length, e.members.length, `${where}: ${ts} branches`);
      e.members.forEach((b, i) => checkType(branches[i], b.type, `${where}|${i}`, seen));
      return;
    }
    case "object": {
      if (!e.variants) {
        if (e.members.length === 0) {
          assert.deepEqual(gen.aliases.get(ts), ["Record<string, never>"], where);
          return;
        }
        checkMembers(ts, e.members, where, seen);
        return;
      }
      // Flat union: one branch per tag value: [Base &] { tag: "v" } [& Branch]
      const branches = gen.aliases.get(ts);
      assert.ok(branches, `${where}: union ${ts} missing`);
      const tagType = e.members.find((m) => m.name === e.tag)!.type;
      const values = (schema.get(tagType) as { values: string[] }).values;
      assert.equal(branches.length, values.length, `${where}: ${ts} has a branch per tag value`);
      for (const value of values) {
        const lit = `{ ${/^\w+$/.test(e.tag!) ? e.tag : JSON.stringify(e.tag)}: ${
          JSON.stringify(value)
        } }`;
        const b: string | undefined = branches.find((x) => x.split(" & ").includes(lit));
        assert.ok(b, `${where}: ${ts} lacks branch ${lit}`);
        const parts: string[] = b.split(" & ");
        const idx = parts.indexOf(lit);
        if (idx === 1) checkMembers(parts[0], e.members, `${where}(base)`, seen);
        else assert.equal(e.members.length, 1, `${where}: ${ts} needs a base`);
        const variant = e.variants.find((v) => v.case === value);
        const rest: string[] = parts.slice(idx + 1);
        if (!variant || variant.type === "0") assert.deepEqual(rest, [], `${where}(${value})`);
        else checkType(rest[0], variant.type, `${where}(${value})`, seen);
      }
      return;
    }
  }
  assert.fail(`${where}: unexpected ${e["meta-type"]}`);
}

function checkMembers(
  ts: string,
  members: { name: string; type: string; default?: null }[],
  where: string,
  seen: Set<string>,
): void {
  const iface = gen.interfaces.get(ts);
  assert.ok(iface, `${where}: interface ${ts} missing`);
  assert.deepEqual([...iface.keys()], members.map((m) => m.name), `${where}: ${ts} member names`);
  for (const m of members) {
    const t: TsMember = iface.get(m.name)!;
    assert.equal(t.optional, "default" in m, `${where}: ${ts}.${m.name} optionality`);
    checkType(t.type, m.type, `${where}.${m.name}`, seen);
  }
}

Deno.test("every command is typed with matching arguments and return type", () => {
  const commands = schema.commands();
  assert.equal(commands.length, 216);
  assert.equal(gen.commands.size, commands.length);
  for (const c of commands) {
    const g = gen.commands.get(c.name);
    assert.ok(g, `command ${c.name} missing`);
    checkType(g.args, c["arg-type"], `${c.name} args`);
    checkType(g.ret, c["ret-type"], `${c.name} return`);
  }
});

Deno.test("every event is typed with matching data", () => {
  const events = schema.events();
  assert.equal(events.length, 52);
  assert.equal(gen.events.size, events.length);
  for (const e of events) {
    const g = gen.events.get(e.name);
    assert.ok(g, `event ${e.name} missing`);
    if (e["arg-type"] === "0") assert.equal(g, "undefined", e.name);
    else checkType(g, e["arg-type"], `${e.name} data`);
  }
});

Deno.test("QEMU's real type names are used", () => {
  assert.equal(gen.commands.get("query-status")?.ret, "StatusInfo");
  assert.equal(gen.interfaces.get("StatusInfo")?.get("status")?.type, "RunState");
  assert.equal(gen.commands.get("query-block")?.ret, "BlockInfo[]");
  assert.equal(gen.commands.get("blockdev-add")?.args, "BlockdevOptions");
  assert.ok(gen.aliases.get("BlockdevOptions")?.some((b) => b.endsWith("& BlockdevOptionsNull")));
  assert.equal(gen.interfaces.get("ShutdownData")?.get("reason")?.type, "ShutdownCause");
  assert.equal(gen.events.get("SHUTDOWN"), "ShutdownData");
  assert.equal(gen.events.get("STOP"), "undefined");
  assert.deepEqual(gen.aliases.get("BlockdevRef"), ["BlockdevOptions", "string"]);
  assert.equal(gen.aliases.get("JobStatus")?.length, 11);
  // Nothing is named after an introspection number.
  for (const name of [...gen.interfaces.keys(), ...gen.aliases.keys()]) {
    assert.doesNotMatch(name, /^[A-Za-z]?\d+$/, name);
  }
});

Deno.test("command docs carry oob / deprecated / experimental markers and a reference link", () => {
  const doc = (cmd: string) => {
    const key = /^\w+$/.test(cmd) ? cmd : JSON.stringify(cmd);
    const at = typesText.indexOf(`\n  ${key}: {`);
    assert.ok(at > 0, cmd);
    return typesText.slice(typesText.lastIndexOf("/**", at), at);
  };
  assert.match(doc("migrate-pause"), /out-of-band/);
  assert.match(doc("x-query-virtio"), /@experimental/);
  assert.match(doc("drive-backup"), /@deprecated/);
  assert.doesNotMatch(doc("query-status"), /@deprecated|@experimental|out-of-band/);
  assert.match(doc("query-status"), /@see https:\/\/\S+#qapidoc-\d+\n/);
});

// ---------------------------------------------------------------------------------------------
// Generator unit tests on a small hand-written manual (no QEMU needed)
// ---------------------------------------------------------------------------------------------

const MINI_MAN = String.raw`.TH "QEMU-QMP-REF" "7" "Jan 01, 2000" "9.8.7" "QEMU"
.SH NAME
qemu-qmp-ref \- test
.SS Contents
\fI\%Things\fP
.SH THINGS
.SS \fBColor\fP (Enum)
.SS Values
.INDENT 0.0
.TP
.B \fBred\fP
r
.TP
.B \fBgreen\fP
g
.TP
\fBblue\fP (\fBIf: \fP\fBCONFIG_BLUE\fP)
b
.UNINDENT
.SS Since
.sp
1.0
.SS \fBPaint\fP (Object)
.SS Members
.INDENT 0.0
.TP
.B \fBcolor\fP: \fBColor\fP
c
.TP
.B \fBcoats\fP: \fBint\fP (optional)
n
.UNINDENT
.SS \fBPaintInfo\fP (Object)
.SS Members
.INDENT 0.0
.TP
.B \fBpaints\fP: \fBarray of Paint\fP
p
.UNINDENT
A free paragraph.
.SS Since
.sp
1.0
.SS \fBquery\-paint\fP (Command)
.SS Arguments
.INDENT 0.0
.TP
.B \fBwet\fP: \fBboolean\fP (optional)
w
.UNINDENT
.SS Returns
.sp
\fBPaintInfo\fP
.SS \fBPAINTED\fP (Event)
.SS Arguments
.INDENT 0.0
.TP
.B The members of \fBPaint\fP
.UNINDENT
`;

const MINI_SCHEMA: SchemaEntry[] = [
  { name: "query-paint", "meta-type": "command", "arg-type": "7", "ret-type": "3" },
  { name: "PAINTED", "meta-type": "event", "arg-type": "5" },
  { name: "7", "meta-type": "object", members: [{ name: "wet", type: "bool", default: null }] },
  { name: "3", "meta-type": "object", members: [{ name: "paints", type: "[5]" }] },
  {
    name: "5",
    "meta-type": "object",
    members: [{ name: "color", type: "9" }, { name: "coats", type: "int", default: null }],
  },
  { name: "[5]", "meta-type": "array", "element-type": "5" },
  { name: "9", "meta-type": "enum", values: ["red", "green"] },
  { name: "bool", "meta-type": "builtin", "json-type": "boolean" },
  { name: "int", "meta-type": "builtin", "json-type": "int" },
];

Deno.test("parseManPage: definitions, members, values and section numbering", () => {
  const man = parseManPage(MINI_MAN);
  assert.equal(man.version, "9.8.7");
  assert.deepEqual([...man.defs.keys()], ["Color", "Paint", "PaintInfo", "query-paint", "PAINTED"]);
  const color = man.defs.get("Color")!;
  assert.deepEqual(color.values, [
    { name: "red", ifcond: [] },
    { name: "green", ifcond: [] },
    { name: "blue", ifcond: ["CONFIG_BLUE"] },
  ]);
  assert.deepEqual(man.defs.get("Paint")!.members[1], {
    name: "coats",
    type: "int",
    optional: true,
    ifcond: [],
  });
  assert.equal(man.defs.get("PAINTED")!.base, "Paint");
  // heading 0; Color: Values 1, Since 2, self 3; Paint: Members 4, self 5;
  // PaintInfo: Members 6, untitled 7, Since 8, self 9; query-paint: 10, 11, self 12.
  assert.deepEqual([...man.defs.values()].map((d) => d.anchor), [3, 5, 9, 12, 14]);
});

Deno.test("recoverNames: names flow from commands/events through members and arrays", () => {
  const names = recoverNames(new Schema(MINI_SCHEMA), parseManPage(MINI_MAN));
  assert.deepEqual(names.warnings, []);
  const got = Object.fromEntries([...names.byId].map(([id, t]) => [id, `${t.name}/${t.source}`]));
  assert.deepEqual(got, {
    "7": "QueryPaintArguments/implicit",
    "5": "Paint/recovered",
    "9": "Color/recovered",
    "3": "PaintInfo/recovered",
  });
  const { text, stats } = generate(MINI_SCHEMA, MINI_MAN);
  assert.deepEqual(stats, { recovered: 3, implicit: 1, synthesized: 0, total: 4 });
  assert.match(text, /"query-paint": \{ args: QueryPaintArguments; return: PaintInfo \};/);
  assert.match(text, /\n {2}PAINTED: Paint;\n/);
  assert.match(text, /\nexport type Color = "red" \| "green";\n/);
  assert.match(text, /\n {2}coats\?: number \| bigint;\n/);
  assert.equal(generate(MINI_SCHEMA, MINI_MAN).text, text, "deterministic");
});

// ---------------------------------------------------------------------------------------------
// 3. Regeneration (needs the installed manual)
// ---------------------------------------------------------------------------------------------

const manPath = await findManPage();

Deno.test({
  name: "regenerating from the fixture is byte-identical to lib/qapi/types.ts",
  ignore: manPath === null,
  async fn() {
    const roff = await readManPage(manPath!);
    const v = JSON.parse(await Deno.readTextFile(VERSION_FIXTURE)).qemu;
    const qemuVersion = `${v.major}.${v.minor}.${v.micro}`;
    assert.equal(parseManPage(roff).version, qemuVersion, "manual and fixture versions agree");
    const t0 = performance.now();
    const out = generate(entries, roff, { qemuVersion });
    const ms = performance.now() - t0;
    assert.deepEqual(out.names.warnings, []);
    assert.deepEqual(out.stats, { recovered: 536, implicit: 154, synthesized: 0, total: 690 });
    assert.ok(out.text === typesText, "lib/qapi/types.ts is stale: run deno task gen-qapi");
    assert.equal(generate(entries, roff, { qemuVersion }).text, out.text, "deterministic");
    assert.ok(ms < 5000, `generation took ${ms} ms`);
    // Section numbering reproduces QEMU's Sphinx ids (seen in the wild: QKeyCode = qapidoc-1729).
    assert.equal(parseManPage(roff).defs.get("QKeyCode")?.anchor, 1729);
  },
});

Deno.test("the generated file is deno fmt-clean", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--check", "--line-width", "100", TYPES.pathname],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
});
