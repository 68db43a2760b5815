/**
 * Unit tests of the CLI's pure parsing: tokenizing, key=value values, dotted
 * keys, raw JSON commands and the transaction syntax. No permissions.
 */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  parseArgsJson,
  parseJsonCommand,
  parseKeyValues,
  parseValue,
  ShellParser,
  shellSplit,
  tokenize,
  UsageError,
} from "../scripts/cli/args.ts";
import { stringifyJson } from "../lib/json.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

function throwsUsage(fn: () => unknown, pattern: RegExp): void {
  assertThrows(fn, (e: unknown) => e instanceof UsageError && pattern.test(e.message));
}

test("tokenize: whitespace splits, but not inside quotes or JSON brackets", () => {
  assertEquals(
    tokenize(`blockdev-add  a={"x": [1, 2]} b="two words" c='it is' d=[ 1 ]`).map((t) => t.text),
    ["blockdev-add", `a={"x": [1, 2]}`, `b="two words"`, `c='it is'`, "d=[ 1 ]"],
  );
  const t = tokenize("  ab  cd");
  assertEquals(t.map((x) => [x.start, x.end]), [[2, 4], [6, 8]]);
  assertEquals(tokenize(""), []);
  // An unterminated quote is an error, as in qmp-shell (shlex): see below.
  throwsUsage(() => tokenize(`a="b c`), /No closing quotation/);
});

test("parseValue: JSON literals when they parse, strings otherwise", () => {
  assertEquals(parseValue("42"), 42);
  assertEquals(parseValue("-1.5"), -1.5);
  assertEquals(parseValue("1e3"), 1000);
  assertEquals(parseValue("true"), true);
  assertEquals(parseValue("false"), false);
  assertEquals(parseValue("null"), null);
  assertEquals(parseValue(`{"a": [1, {"b": null}]}`), { a: [1, { b: null }] });
  assertEquals(parseValue("[1,2]"), [1, 2]);
  assertEquals(parseValue(`"123"`), "123"); // quoted: a string even if it looks like a number
  assertEquals(parseValue(`"a \\"b\\""`), `a "b"`);
  assertEquals(parseValue("'two words'"), "two words");
  assertEquals(parseValue("usb-tablet"), "usb-tablet");
  assertEquals(parseValue("0x10"), "0x10");
  assertEquals(parseValue("01"), "01"); // not a JSON number
  assertEquals(parseValue(""), "");
  assertEquals(parseValue("/tmp/x.img"), "/tmp/x.img");
  throwsUsage(() => parseValue("{bad", "opts"), /Invalid JSON for opts/);
  throwsUsage(() => parseValue("[1,", "list"), /Invalid JSON for list/);
});

test("parseKeyValues: dotted keys build nested objects", () => {
  assertEquals(
    parseKeyValues([
      "driver=qcow2",
      "node-name=disk0",
      "file.driver=file",
      "file.filename=/tmp/a.qcow2",
      "file.aio.x=1",
      "read-only=true",
    ]),
    {
      driver: "qcow2",
      "node-name": "disk0",
      file: { driver: "file", filename: "/tmp/a.qcow2", aio: { x: 1 } },
      "read-only": true,
    },
  );
  assertEquals(parseKeyValues([]), {});
  assertEquals(parseKeyValues(["a=x=y"]), { a: "x=y" });
});

test("parseKeyValues: duplicates and leaf/object conflicts are usage errors", () => {
  throwsUsage(() => parseKeyValues(["id=a", "id=b"]), /"id" is given more than once/);
  throwsUsage(() => parseKeyValues(["a=1", "a.b=2"]), /"a" as both a value and an object/);
  throwsUsage(() => parseKeyValues(["a.b=2", "a=1"]), /"a" as both a value and an object/);
  throwsUsage(() => parseKeyValues(["a.b=1", "a.b=2"]), /"a.b" is given more than once/);
  throwsUsage(() => parseKeyValues(["a.b.c=1", "a.b=2"]), /"a.b" as both/);
  // A JSON object value is whole: dotted keys may not extend it.
  throwsUsage(() => parseKeyValues([`a={"b":1}`, "a.c=2"]), /"a" as both/);
  throwsUsage(() => parseKeyValues(["novalue"]), /Expected key=value/);
  throwsUsage(() => parseKeyValues(["key:value"]), /key=value instead of key:value/);
  throwsUsage(() => parseKeyValues(["=1"]), /Missing argument name/);
  throwsUsage(() => parseKeyValues(["a..b=1"]), /empty path component/);
});

test("parseKeyValues: key=value on top of --args JSON", () => {
  const base = parseArgsJson(`{"driver": "usb-tablet", "opts": {"a": 1}}`);
  assertEquals(parseKeyValues(["id=t0", "opts.b=2"], base), {
    driver: "usb-tablet",
    id: "t0",
    opts: { a: 1, b: 2 },
  });
  assertEquals(base, { driver: "usb-tablet", opts: { a: 1 } }, "base is not modified");
  throwsUsage(() => parseKeyValues(["driver=x"], base), /"driver" is given more than once/);
  throwsUsage(() => parseArgsJson("[1]"), /must be a JSON object/);
  throwsUsage(() => parseArgsJson("{"), /not valid JSON/);
});

test("parseJsonCommand: execute and arguments; other members rejected", () => {
  assertEquals(parseJsonCommand(`{"execute": "query-status"}`), { execute: "query-status" });
  assertEquals(parseJsonCommand(`{"execute": "stop", "arguments": {}, "id": 7}`), {
    execute: "stop",
    arguments: {},
  });
  throwsUsage(() => parseJsonCommand(`{"execute": 1}`), /needs "execute"/);
  throwsUsage(() => parseJsonCommand(`{"execute": "x", "arguments": [1]}`), /must be an object/);
  throwsUsage(() => parseJsonCommand(`{"exec-oob": "x"}`), /exec-oob is not supported/);
  throwsUsage(() => parseJsonCommand(`{"execute": "x", "foo": 1}`), /Unexpected member "foo"/);
  throwsUsage(() => parseJsonCommand(`{"execute": `), /Invalid JSON/);
});

test("ShellParser: commands, JSON, blanks and comments", () => {
  const p = new ShellParser();
  assertEquals(p.feed("query-status"), { kind: "command", command: { execute: "query-status" } });
  assertEquals(p.feed("  device_add driver=usb-tablet id=t0  "), {
    kind: "command",
    command: { execute: "device_add", arguments: { driver: "usb-tablet", id: "t0" } },
  });
  assertEquals(p.feed(`{"execute":"qom-get","arguments":{"path":"/machine","property":"type"}}`), {
    kind: "command",
    command: { execute: "qom-get", arguments: { path: "/machine", property: "type" } },
  });
  assertEquals(p.feed(""), { kind: "empty" });
  assertEquals(p.feed("   # a comment"), { kind: "empty" });
  throwsUsage(() => p.feed("device_add id"), /Expected key=value/);
});

const bitmap = (name: string, extra: Record<string, unknown> = {}) => ({
  type: "block-dirty-bitmap-add",
  data: { node: "n0", name, ...extra },
});

test("ShellParser: a transaction on one line, actions separated by commas", () => {
  const p = new ShellParser();
  assertEquals(
    p.feed(
      "transaction( block-dirty-bitmap-add node=n0 name=b0, block-dirty-bitmap-add node=n0 name=b1 )",
    ),
    {
      kind: "command",
      command: { execute: "transaction", arguments: { actions: [bitmap("b0"), bitmap("b1")] } },
    },
  );
  assertEquals(p.inTransaction, false);
  // No spaces around the parentheses, comma glued to the last value.
  assertEquals(p.feed("transaction(abort, block-dirty-bitmap-add node=n0 name=b2)"), {
    kind: "command",
    command: {
      execute: "transaction",
      arguments: { actions: [{ type: "abort", data: {} }, bitmap("b2")] },
    },
  });
  // A ")" or "," inside a quoted or JSON value is data.
  assertEquals(
    p.feed(`transaction( block-dirty-bitmap-add node=n0 name="b)," x={"a": [1, 2]} )`),
    {
      kind: "command",
      command: {
        execute: "transaction",
        arguments: { actions: [bitmap("b),", { x: { a: [1, 2] } })] },
      },
    },
  );
});

test("ShellParser: a multi-line transaction with the TRANS> prompt", () => {
  const p = new ShellParser();
  assertEquals(p.feed("transaction("), { kind: "continue" });
  assertEquals(p.inTransaction, true);
  assertEquals(p.feed("block-dirty-bitmap-add node=n0 name=b0"), { kind: "continue" });
  assertEquals(p.feed(""), { kind: "continue" });
  assertEquals(p.feed("block-dirty-bitmap-add node=n0 name=b1 persistent=false,"), {
    kind: "continue",
  });
  assertEquals(p.pendingActions, 2);
  assertEquals(p.feed(")"), {
    kind: "command",
    command: {
      execute: "transaction",
      arguments: { actions: [bitmap("b0"), bitmap("b1", { persistent: false })] },
    },
  });
  assertEquals(p.inTransaction, false);
  // The last action may close it on its own line.
  p.feed("transaction( abort");
  assertEquals(p.feed("block-dirty-bitmap-add node=n0 name=b3 )"), {
    kind: "command",
    command: {
      execute: "transaction",
      arguments: { actions: [{ type: "abort", data: {} }, bitmap("b3")] },
    },
  });
});

test("ShellParser: an error inside a transaction abandons it", () => {
  const p = new ShellParser();
  p.feed("transaction(");
  p.feed("abort");
  throwsUsage(() => p.feed("block-dirty-bitmap-add node=n0 node=n1"), /more than once/);
  assertEquals(p.inTransaction, true, "the rest of the transaction is skipped up to its ')'");
  assertEquals(p.feed(")").kind, "empty");
  assertEquals(p.inTransaction, false);
  throwsUsage(() => p.feed("transaction( abort ) extra"), /Unexpected input after the closing/);
  assertEquals(p.inTransaction, false);
  throwsUsage(() => p.feed("transaction( , abort )"), /Empty action/);
  p.feed("transaction(");
  p.reset();
  assertEquals(p.inTransaction, false);
});

test("shellSplit: POSIX-like splitting for --launch-args", () => {
  assertEquals(shellSplit(`-M pc -S  -name "my vm" -append 'a b' x\\ y`), [
    "-M",
    "pc",
    "-S",
    "-name",
    "my vm",
    "-append",
    "a b",
    "x y",
  ]);
  assertEquals(shellSplit(""), []);
  assertEquals(shellSplit(`"a\\"b"`), [`a"b`]);
  assertEquals(shellSplit(`""`), [""]);
  throwsUsage(() => shellSplit(`-name "x`), /Unterminated "/);
  throwsUsage(() => shellSplit(`-name 'x`), /Unterminated '/);
});

test("tokenize: an unclosed quote or bracket is an error, not the rest of the line", () => {
  throwsUsage(() => tokenize("device_add driver=usb-tablet serial=bob's id=tab0"), /No closing/);
  throwsUsage(() => tokenize("device_add serial=a[1 id=x"), /Unbalanced brackets/);
});

test("integers beyond 2^53 are sent digit for digit", () => {
  assertEquals(
    stringifyJson(parseKeyValues(["max-bandwidth=18446744073709551615"])),
    `{"max-bandwidth":18446744073709551615}`,
  );
  assertEquals(
    stringifyJson(parseKeyValues(["x=1"], parseArgsJson(`{"b": 9007199254740993, "c": 1.5}`))),
    `{"b":9007199254740993,"c":1.5,"x":1}`,
  );
});

test("a failed line inside a multi-line transaction discards the rest of it", () => {
  const p = new ShellParser();
  assertEquals(p.feed("transaction(").kind, "continue");
  assertEquals(p.feed("block-dirty-bitmap-add node=n0 name=b0").kind, "continue");
  throwsUsage(() => p.feed("block-dirty-bitmap-add node=n0 name=b1 persistent"), /key=value/);
  assertEquals(p.inTransaction, true);
  assertEquals(p.feed("block-dirty-bitmap-add node=n0 name=b2").kind, "continue");
  assertEquals(p.feed(")").kind, "empty");
  assertEquals(p.inTransaction, false);
  assertEquals(p.feed("query-status").kind, "command");
});
