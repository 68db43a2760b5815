/** Runtime validation against the live schema, compared with QEMU's own verdicts. */
import assert from "node:assert/strict";
import { connect, type QmpClient } from "../lib/client.ts";
import { launch } from "../lib/machine.ts";
import { QmpCommandError } from "../lib/errors.ts";
import { QmpSchema, QmpValidationError, type SchemaEntry } from "../lib/qapi/schema.ts";

const fixture = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/qmp-schema-7.2.json", import.meta.url)),
) as SchemaEntry[];

Deno.test("schema: validation messages name the bad member (fixture, no QEMU)", () => {
  const schema = new QmpSchema(fixture);
  assert.equal(schema.commandNames().length, 216);
  assert.equal(schema.eventNames().length, 52);
  const cases: [string, unknown, RegExp | undefined][] = [
    ["query-status", undefined, undefined],
    ["stop", { force: true }, /'force' is not a member/],
    ["device_del", {}, /'id' is missing \(required\)/],
    ["device_del", { id: 5 }, /'id' expected a string, got the integer 5/],
    ["human-monitor-command", { "command-line": "info version" }, undefined],
    ["human-monitor-command", { "comand-line": "x" }, /did you mean 'command-line'/],
    ["blockdev-add", { driver: "null-co", "node-name": "n0" }, undefined],
    [
      "blockdev-add",
      { driver: "null-co", "node-name": "n0", size: "big" },
      /'size' expected an integer/,
    ],
    ["blockdev-add", { driver: "nope", "node-name": "n0" }, /'driver' "nope" is not one of/],
    ["blockdev-add", { driver: "qcow2", "node-name": "q" }, /'file' is missing/],
    // file is an alternate: a node name (string) or inline options (object).
    ["blockdev-add", { driver: "qcow2", "node-name": "q", file: "n0" }, undefined],
    ["blockdev-add", { driver: "qcow2", "node-name": "q", file: 3 }, /'file' expected/],
    [
      "blockdev-add",
      { driver: "qcow2", "node-name": "q", file: { driver: "file", filename: 7 } },
      /'file\.filename' expected a string/,
    ],
    ["query-stauts", undefined, /no such command/],
    // device_add (feature json-cli) takes device properties beyond its schema.
    ["device_add", { driver: "virtio-blk-pci", drive: "d0", id: "disk1" }, undefined],
    ["device_add", { id: "x" }, /'driver' is missing/],
    ["qmp_capabilities", { enable: ["oob", "bogus"] }, /'enable\[1\]' "bogus" is not one of: oob/],
  ];
  for (const [cmd, args, re] of cases) {
    const err = schema.validateArguments(cmd, args);
    if (re === undefined) assert.equal(err, undefined, `${cmd} ${JSON.stringify(args)}: ${err}`);
    else {
      assert.ok(err instanceof QmpValidationError, `${cmd} ${JSON.stringify(args)} passed`);
      assert.match(err.message, re);
      assert.equal(err.command, cmd);
    }
  }
});

Deno.test("schema: validate: true rejects before sending, where QEMU would reject too", async () => {
  const dir = await Deno.makeTempDir();
  const second = `${dir}/second.sock`;
  await using vm = await launch({
    machine: "pc",
    paused: true,
    memory: 64,
    args: ["-qmp", `unix:${second},server=on,wait=off`],
    timeout: "20s",
  });
  let checked: QmpClient | undefined;
  const sent: string[] = [];
  try {
    checked = await connect(`unix:${second}`, {
      validate: true,
      timeout: "10s",
      transcript: (e) => {
        if (e.direction === "send") sent.push(String(e.message.execute));
      },
    });
    const bad: [string, Record<string, unknown>][] = [
      ["stop", { force: true }],
      ["device_del", {}],
      ["human-monitor-command", { "command-line": 5 }],
      ["device_add", { driver: 7 }],
      ["blockdev-add", { driver: "null-co", "node-name": "n0", size: "big" }],
    ];
    for (const [cmd, args] of bad) {
      await assert.rejects(checked.executeRaw(cmd, args), QmpValidationError, cmd);
      // QEMU agrees: the same arguments fail there too.
      await assert.rejects(vm.qmp.executeRaw(cmd, args), (e: unknown) => {
        assert.ok(e instanceof QmpCommandError, `${cmd}: ${e}`);
        assert.equal(e.class, "GenericError");
        return true;
      });
    }
    assert.deepEqual(sent.filter((c) => c !== "qmp_capabilities"), ["query-qmp-schema"]);
    // Good arguments pass and run.
    await checked.execute("blockdev-add", { driver: "null-co", "node-name": "n0" });
    assert.equal((await checked.execute("query-status")).status, "prelaunch");
  } finally {
    await checked?.close();
    await Deno.remove(dir, { recursive: true });
  }
});
