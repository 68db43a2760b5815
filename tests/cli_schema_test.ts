/**
 * Unit tests of the schema model (help rendering) and of Tab completion,
 * on a small schema shaped like QEMU 7.2's introspection (numbered types).
 * No permissions.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { columns, type SchemaEntry, SchemaModel } from "../scripts/cli/schema_help.ts";
import {
  commonPrefix,
  complete,
  type CompletionSources,
  parseHmpHelp,
  parseHmpInfo,
  QMP_META_COMMANDS,
} from "../scripts/cli/completion.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

const builtin = (name: string, json: string): SchemaEntry => ({
  name,
  "meta-type": "builtin",
  "json-type": json,
});
const obj = (
  name: string,
  members: { name: string; type: string; optional?: boolean; features?: string[] }[],
  extra: Partial<SchemaEntry> = {},
): SchemaEntry => ({
  name,
  "meta-type": "object",
  members: members.map((m) => ({
    name: m.name,
    type: m.type,
    ...(m.optional ? { default: null } : {}),
    ...(m.features ? { features: m.features } : {}),
  })),
  ...extra,
});
const cmd = (name: string, arg: string, ret: string, extra: Partial<SchemaEntry> = {}) => ({
  name,
  "meta-type": "command",
  "arg-type": arg,
  "ret-type": ret,
  ...extra,
});
const enumT = (name: string, values: string[]): SchemaEntry => ({
  name,
  "meta-type": "enum",
  values,
  members: values.map((v) => ({ name: v })),
});

/** A miniature 7.2-style schema. */
const SCHEMA: SchemaEntry[] = [
  builtin("str", "string"),
  builtin("int", "int"),
  builtin("bool", "boolean"),
  builtin("any", "value"),
  builtin("null", "null"),
  obj("0", []),
  cmd("query-status", "0", "1"),
  obj("1", [{ name: "running", type: "bool" }, { name: "status", type: "2" }]),
  enumT("2", ["running", "paused", "prelaunch"]),
  cmd("query-stats", "0", "0"),
  cmd("device_add", "3", "0", { features: ["json-cli"] }),
  obj("3", [
    { name: "driver", type: "str" },
    { name: "bus", type: "str", optional: true },
    { name: "id", type: "str", optional: true },
  ]),
  cmd("blockdev-add", "4", "0"),
  obj("4", [
    { name: "driver", type: "5" },
    { name: "node-name", type: "str", optional: true },
    { name: "cache", type: "6", optional: true },
  ], {
    tag: "driver",
    variants: [
      { case: "file", type: "7" },
      { case: "null-co", type: "8" },
      { case: "qcow2", type: "24" },
    ],
  }),
  enumT("5", ["file", "null-co", "qcow2"]),
  obj("6", [{ name: "direct", type: "bool", optional: true }, {
    name: "no-flush",
    type: "bool",
    optional: true,
  }]),
  obj("7", [
    { name: "filename", type: "str" },
    { name: "aio", type: "9", optional: true },
    { name: "x-check", type: "bool", optional: true, features: ["unstable"] },
  ]),
  obj("8", [{ name: "size", type: "int", optional: true }, {
    name: "read-zeroes",
    type: "bool",
    optional: true,
  }]),
  enumT("9", ["threads", "native"]),
  obj("24", [{ name: "file", type: "23" }, { name: "backing", type: "23", optional: true }]),
  { name: "23", "meta-type": "alternate", members: [{ type: "4" }, { type: "str" }] },
  cmd("transaction", "10", "0"),
  obj("10", [{ name: "actions", type: "[11]" }, {
    name: "properties",
    type: "12",
    optional: true,
  }]),
  { name: "[11]", "meta-type": "array", "element-type": "11" },
  obj("11", [{ name: "type", type: "13" }], {
    tag: "type",
    variants: [{ case: "abort", type: "14" }, { case: "block-dirty-bitmap-add", type: "15" }],
  }),
  enumT("13", ["abort", "block-dirty-bitmap-add"]),
  obj("14", [{ name: "data", type: "16" }]),
  obj("16", []),
  obj("15", [{ name: "data", type: "17" }]),
  obj("17", [
    { name: "node", type: "str" },
    { name: "name", type: "str" },
    { name: "persistent", type: "bool", optional: true },
  ]),
  obj("12", [{ name: "completion-mode", type: "18", optional: true }]),
  enumT("18", ["individual", "grouped"]),
  cmd("query-block", "0", "[21]"),
  { name: "[21]", "meta-type": "array", "element-type": "21" },
  obj("21", [{ name: "device", type: "str" }, { name: "inserted", type: "22", optional: true }]),
  obj("22", [{ name: "file", type: "str" }, { name: "ro", type: "bool" }]),
  cmd("human-monitor-command", "25", "str"),
  obj("25", [{ name: "command-line", type: "str" }, {
    name: "cpu-index",
    type: "int",
    optional: true,
  }]),
  { name: "STOP", "meta-type": "event", "arg-type": "0" },
  { name: "SHUTDOWN", "meta-type": "event", "arg-type": "19" },
  obj("19", [{ name: "guest", type: "bool" }, { name: "reason", type: "20" }]),
  enumT("20", ["host-qmp-quit", "guest-shutdown"]),
];

const model = SchemaModel.fromSchema(SCHEMA);

test("schema model: names, members, unions, alternates, transaction actions", () => {
  assertEquals(model.commands(), [
    "blockdev-add",
    "device_add",
    "human-monitor-command",
    "query-block",
    "query-stats",
    "query-status",
    "transaction",
  ]);
  assertEquals(model.events(), ["SHUTDOWN", "STOP"]);
  assertEquals(model.argumentMembers("device_add")?.map((m) => [m.name, m.optional]), [
    ["driver", false],
    ["bus", true],
    ["id", true],
  ]);
  // A union without its tag value: common members plus every variant's (optional).
  assertEquals(model.argumentMembers("blockdev-add")?.map((m) => m.name), [
    "driver",
    "node-name",
    "cache",
    "filename",
    "aio",
    "x-check",
    "size",
    "read-zeroes",
    "file",
    "backing",
  ]);
  // With the tag value: only that variant.
  assertEquals(
    model.argumentMembers("blockdev-add", [], { driver: "null-co" })?.map((m) => m.name),
    ["driver", "node-name", "cache", "size", "read-zeroes"],
  );
  // Through an alternate (BlockdevRef = BlockdevOptions | str) with a nested tag value.
  assertEquals(
    model.argumentMembers("blockdev-add", ["file"], { driver: "qcow2", file: { driver: "file" } })
      ?.map((m) => m.name),
    ["driver", "node-name", "cache", "filename", "aio", "x-check"],
  );
  assertEquals(model.argumentMembers("blockdev-add", ["nope"]), undefined);
  assertEquals(model.valueCandidates("9"), ["threads", "native"]);
  assertEquals(model.valueCandidates("bool"), ["true", "false"]);
  assertEquals(model.valueCandidates("str"), []);
  assertEquals(model.typeLabel("23"), "object|str");
  assertEquals(model.typeLabel("[21]"), "array of object");
  assertEquals(model.typeLabel("int"), "int");
  assertEquals(model.transactionActions(), ["abort", "block-dirty-bitmap-add"]);
  assertEquals(
    model.objectMembers(model.transactionDataType("block-dirty-bitmap-add")!)?.map(
      (m) => m.name,
    ),
    ["node", "name", "persistent"],
  );
});

test("help CMD: arguments with types and optional flags, return type", () => {
  assertEquals(
    model.commandHelp("query-status"),
    [
      "query-status",
      "  Arguments: none",
      "  Returns: object",
      "    running  bool",
      "    status   enum  (running|paused|prelaunch)",
    ].join("\n"),
  );
  assertEquals(
    model.commandHelp("device_add"),
    [
      "device_add  [json-cli]",
      "  Arguments:",
      "    driver  str",
      "    bus     str  (optional)",
      "    id      str  (optional)",
      "  Returns: nothing ({})",
    ].join("\n"),
  );
  const hmp = model.commandHelp("human-monitor-command")!;
  assert(hmp.includes("command-line  str\n"), hmp);
  assert(hmp.includes("cpu-index     int  (optional)"), hmp);
  assert(hmp.endsWith("Returns: str"), hmp);
});

test("help CMD: unions list their variants; help CMD tag=value shows one", () => {
  const all = model.commandHelp("blockdev-add")!;
  assert(all.includes("driver          enum    (file|null-co|qcow2)"), all);
  assert(all.includes("cache.direct    bool    (optional)"), all);
  assert(all.includes("Variants by driver: file, null-co, qcow2"), all);
  assert(!all.includes("filename"), "variant members are not listed without a tag value");
  const file = model.commandHelp("blockdev-add", { driver: "file" })!;
  assert(/filename\s+str\n/.test(file), file);
  assert(/aio\s+enum\s+\(optional; threads\|native\)/.test(file), file);
  assert(/x-check\s+bool\s+\(optional, unstable\)/.test(file), file);
  assert(!file.includes("Variants by"), file);
  const qb = model.commandHelp("query-block")!;
  assert(qb.includes("Returns: array of object"), qb);
  assert(/inserted\.ro\s+bool/.test(qb), qb);
  assertEquals(model.commandHelp("nope"), undefined);
  assert(model.eventHelp("SHUTDOWN")!.includes("reason  enum  (host-qmp-quit|guest-shutdown)"));
  assertEquals(model.eventHelp("query-status"), undefined);
  const namesOnly = SchemaModel.fromCommandNames(["b", "a"]);
  assertEquals(namesOnly.commands(), ["a", "b"]);
  assertEquals(namesOnly.commandHelp("a"), "a\n  (no schema information)");
  assertEquals(namesOnly.hasTypes, false);
});

test("columns: lays words out column-major within the width", () => {
  assertEquals(columns(["a", "bb", "ccc"], 20), "a    bb   ccc");
  assertEquals(columns(["a", "bb", "ccc", "d"], 10), "a    ccc\nbb   d");
  assertEquals(columns([], 10), "");
});

const sources: CompletionSources = {
  schema: model,
  hmpCommands: ["info", "help", "stop", "cont", "c", "system_reset"],
  hmpInfo: ["block", "block-jobs", "status", "version"],
};

function c(line: string, opts: { mode?: "qmp" | "hmp"; inTransaction?: boolean } = {}) {
  const r = complete(
    { line, cursor: line.length, mode: opts.mode ?? "qmp", inTransaction: opts.inTransaction },
    sources,
  );
  return { start: r.start, candidates: r.candidates };
}

test("completion: command names and shell commands", () => {
  assertEquals(c("query-sta"), { start: 0, candidates: ["query-stats", "query-status"] });
  assertEquals(c("query-statu"), { start: 0, candidates: ["query-status"] });
  assertEquals(c("  dev"), { start: 2, candidates: ["device_add"] });
  assertEquals(c("").candidates.length, model.commands().length + QMP_META_COMMANDS.length);
  assertEquals(c("he"), { start: 0, candidates: ["help"] });
  assertEquals(c("help que"), {
    start: 5,
    candidates: ["query-block", "query-stats", "query-status"],
  });
  assertEquals(c("help S"), { start: 5, candidates: ["SHUTDOWN", "STOP"] });
  assertEquals(c("zzz"), { start: 0, candidates: [] });
  assertEquals(c(`{"execute": "q`).candidates, []); // raw JSON: nothing to complete
});

test("completion: argument names, dotted paths and values", () => {
  assertEquals(c("device_add dr"), { start: 11, candidates: ["driver="] });
  assertEquals(c("device_add driver=usb-tablet "), { start: 29, candidates: ["bus=", "id="] });
  assertEquals(c("device_add driver=x id=y "), { start: 25, candidates: ["bus="] });
  assertEquals(c("blockdev-add driver="), { start: 20, candidates: ["file", "null-co", "qcow2"] });
  assertEquals(c("blockdev-add driver=n"), { start: 20, candidates: ["null-co"] });
  assertEquals(c("blockdev-add driver=null-co ").candidates, [
    "cache.",
    "node-name=",
    "read-zeroes=",
    "size=",
  ]);
  assertEquals(c("blockdev-add driver=file cache."), {
    start: 31,
    candidates: ["direct=", "no-flush="],
  });
  assertEquals(c("blockdev-add driver=file cache.d"), { start: 31, candidates: ["direct="] });
  assertEquals(c("blockdev-add driver=file cache.direct="), {
    start: 38,
    candidates: ["false", "true"],
  });
  assertEquals(c("blockdev-add driver=file aio=n"), { start: 29, candidates: ["native"] });
  assertEquals(c("blockdev-add driver=qcow2 fi"), { start: 26, candidates: ["file.", "file="] });
  assertEquals(c("blockdev-add driver=qcow2 file.driver=file file.f"), {
    start: 48,
    candidates: ["filename="],
  });
  assertEquals(c("query-status x"), { start: 13, candidates: [] });
  assertEquals(c("nosuchcommand a"), { start: 14, candidates: [] });
});

test("completion: transactions (one line and the TRANS> prompt)", () => {
  assertEquals(c("transaction( block-d").candidates, ["block-dirty-bitmap-add"]);
  assertEquals(c("transaction(").candidates, ["transaction("]);
  assertEquals(c("transaction( ").candidates, [")", "abort", "block-dirty-bitmap-add"]);
  const line = "transaction( block-dirty-bitmap-add na";
  assertEquals(c(line), { start: line.length - 2, candidates: ["name="] });
  assertEquals(c("transaction( abort, block-dirty-bitmap-add node=n0, ").candidates, [
    ")",
    "abort",
    "block-dirty-bitmap-add",
  ]);
  assertEquals(c("block-dirty-bitmap-add node=n0 p", { inTransaction: true }), {
    start: 31,
    candidates: ["persistent="],
  });
  assertEquals(c("ab", { inTransaction: true }).candidates, ["abort"]);
});

test("completion: HMP commands and info subcommands", () => {
  assertEquals(c("s", { mode: "hmp" }).candidates, ["stop", "system_reset"]);
  assertEquals(c("", { mode: "hmp" }).candidates.includes("qmp"), true);
  assertEquals(c("info bl", { mode: "hmp" }), { start: 5, candidates: ["block", "block-jobs"] });
  assertEquals(c("help sy", { mode: "hmp" }).candidates, ["system_reset"]);
  assertEquals(c("stop x", { mode: "hmp" }).candidates, []);
  assertEquals(c("hmp info ver"), { start: 9, candidates: ["version"] });
  assertEquals(c("hmp co"), { start: 4, candidates: ["cont"] });
});

test("commonPrefix", () => {
  assertEquals(commonPrefix(["query-stats", "query-status"]), "query-stat");
  assertEquals(commonPrefix(["a"]), "a");
  assertEquals(commonPrefix([]), "");
  assertEquals(commonPrefix(["x", "y"]), "");
});

test("HMP help and info output parsing", () => {
  const help = "cont|c  -- resume emulation\r\n" +
    "drive_add [-n] [[<domain>:]<bus>:]<slot>\r\n[file=file][,if=type] -- add drive\r\n" +
    "block_job_cancel [-f] device -- stop an active background block operation (use -f\r\n" +
    "\t\t\t if you want to abort)\r\n" +
    "help|? [cmd] -- show the help\r\n" +
    "info [subcommand] -- show various information about the system state\r\n";
  assertEquals(parseHmpHelp(help), ["?", "block_job_cancel", "c", "cont", "help", "info"]);
  const info = "info balloon  -- show balloon information\r\n" +
    "info block [-n] [-v] [device] -- show info of one block device\r\n" +
    "info version  -- show the version of QEMU\r\n";
  assertEquals(parseHmpInfo(info), ["balloon", "block", "version"]);
});
