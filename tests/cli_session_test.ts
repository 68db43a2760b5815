/**
 * Unit tests of the shell's session logic (what a line does) with a fake
 * client: meta commands, qmp-shell syntax, transactions, HMP mode, errors,
 * logging, cancellation. No terminal, no permissions.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { AbortError, type ExecuteOptions, QmpCommandError, type QmpEvent } from "../mod.ts";
import {
  defaultHistoryPath,
  formatEventLine,
  readLines,
  ShellSession,
} from "../scripts/cli/shell.ts";
import type { SchemaEntry } from "../scripts/cli/schema_help.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

const SCHEMA: SchemaEntry[] = [
  { name: "str", "meta-type": "builtin", "json-type": "string" },
  { name: "0", "meta-type": "object", members: [] },
  { name: "1", "meta-type": "object", members: [{ name: "id", type: "str" }] },
  { name: "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "0" },
  { name: "device_del", "meta-type": "command", "arg-type": "1", "ret-type": "0" },
  { name: "STOP", "meta-type": "event", "arg-type": "0" },
];

interface Call {
  command: string;
  args?: Record<string, unknown>;
}

function setup(replies: Record<string, (args?: Record<string, unknown>) => unknown> = {}) {
  const calls: Call[] = [];
  const out: { result: string[]; error: string[]; info: string[] } = {
    result: [],
    error: [],
    info: [],
  };
  const log: Record<string, unknown>[] = [];
  const client = {
    executeRaw(command: string, args?: Record<string, unknown>, options?: ExecuteOptions) {
      calls.push(args === undefined ? { command } : { command, args });
      if (options?.signal?.aborted) return Promise.reject(new AbortError(command));
      const all: Record<string, (a?: Record<string, unknown>) => unknown> = {
        "query-qmp-schema": () => SCHEMA,
        "query-status": () => ({ status: "running", running: true }),
        "human-monitor-command": (a) =>
          a?.["command-line"] === "help"
            ? "cont|c  -- resume\r\ninfo [subcommand] -- show info\r\n"
            : a?.["command-line"] === "info"
            ? "info status  -- show status\r\n"
            : a?.["command-line"] === "bogus"
            ? "unknown command: 'bogus'\r\n"
            : `ran ${a?.["command-line"]}\r\n`,
        ...replies,
      };
      const reply = all[command];
      if (!reply) {
        return Promise.reject(
          new QmpCommandError(
            command,
            args,
            "CommandNotFound",
            `The command ${command} has not been found`,
          ),
        );
      }
      try {
        return Promise.resolve(reply(args));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
  const session = new ShellSession(client, {
    result: (t) => out.result.push(t),
    error: (t) => out.error.push(t),
    info: (t) => out.info.push(t),
  }, { log: (r) => log.push(r) });
  return { session, calls, out, log };
}

test("session: commands run with parsed arguments; results and log records", async () => {
  const { session, calls, out, log } = setup({ device_del: () => ({}) });
  assertEquals(await session.run("query-status"), "ok");
  assertEquals(await session.run("device_del id=tab0"), "ok");
  assertEquals(await session.run(`{"execute": "device_del", "arguments": {"id": "x"}}`), "ok");
  assertEquals(await session.run("   "), "ok");
  assertEquals(await session.run("# comment"), "ok");
  assertEquals(calls, [
    { command: "query-status" },
    { command: "device_del", args: { id: "tab0" } },
    { command: "device_del", args: { id: "x" } },
  ]);
  assertEquals(out.result, [`{"status":"running","running":true}`, "{}", "{}"]);
  assertEquals(log.map((r) => [r.execute, r.arguments, r.return]), [
    ["query-status", undefined, { status: "running", running: true }],
    ["device_del", { id: "tab0" }, {}],
    ["device_del", { id: "x" }, {}],
  ]);
  assert(typeof log[0].time === "string");
});

test("session: QMP errors and syntax errors are reported, not thrown", async () => {
  const { session, out, log, calls } = setup();
  assertEquals(await session.run("query-nope"), "error");
  assertEquals(out.error, ["Error: The command query-nope has not been found (CommandNotFound)"]);
  assertEquals(log[0].error, {
    class: "CommandNotFound",
    desc: "The command query-nope has not been found",
  });
  assertEquals(await session.run("device_del id=a id=b"), "error");
  assertEquals(out.error[1], `Error: Argument "id" is given more than once`);
  assertEquals(calls.length, 1, "nothing is sent for a syntax error");
  const ac = new AbortController();
  ac.abort();
  assertEquals(await session.run("query-status", ac.signal), "error");
  assertEquals(out.error[2], "Interrupted (the command may still complete in QEMU)");
  assertEquals(await session.run("exit"), "exit");
});

test("session: transactions over several lines, with the TRANS> prompt", async () => {
  const { session, calls } = setup({ transaction: () => ({}) });
  assertEquals(session.prompt(), "(QEMU) ");
  assertEquals(await session.run("transaction("), "ok");
  assertEquals(session.prompt(), "TRANS> ");
  assertEquals(await session.run("block-dirty-bitmap-add node=n0 name=b0"), "ok");
  assertEquals(await session.run("exit"), "ok", "inside a transaction, exit is an action");
  assertEquals(await session.run(")"), "ok");
  assertEquals(session.prompt(), "(QEMU) ");
  assertEquals(calls, [{
    command: "transaction",
    args: {
      actions: [
        { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b0" } },
        { type: "exit", data: {} },
      ],
    },
  }]);
});

test("session: help lists commands and events, describes one", async () => {
  const { session, out } = setup();
  assertEquals(await session.run("help"), "ok");
  assert(out.info[0].startsWith("2 commands"), out.info[0]);
  assert(out.info[0].includes("device_del"), out.info[0]);
  assertEquals(await session.run("help events"), "ok");
  assertEquals(out.info[1], "1 events:\nSTOP");
  assertEquals(await session.run("help device_del"), "ok");
  assertEquals(out.info[2], "device_del\n  Arguments:\n    id  str\n  Returns: nothing ({})");
  assertEquals(await session.run("help STOP"), "ok");
  assertEquals(out.info[3], "STOP (event)\n  Data: none");
  assertEquals(await session.run("help device"), "error");
  assertEquals(out.error, ['Error: unknown command or event "device" (similar: device_del)']);
  assertEquals(session.schema?.commands(), ["device_del", "query-status"]);
});

test("session: HMP mode and one-off hmp lines", async () => {
  const { session, out, calls, log } = setup();
  assertEquals(await session.run("hmp info version"), "ok");
  assertEquals(out.result, ["ran info version"]);
  assertEquals(await session.run("hmp"), "ok");
  assertEquals(session.mode, "hmp");
  assertEquals(session.prompt(), "(HMP) ");
  assertEquals(session.completionSources.hmpCommands, ["c", "cont", "info"]);
  assertEquals(session.completionSources.hmpInfo, ["status"]);
  assertEquals(await session.run("info status"), "ok");
  assertEquals(out.result[1], "ran info status");
  assertEquals(await session.run("bogus"), "error");
  assertEquals(out.error, ["unknown command: 'bogus'"]);
  assertEquals(await session.run("qmp"), "ok");
  assertEquals(session.mode, "qmp");
  assertEquals(
    calls.filter((c) => c.command === "human-monitor-command").map((c) => c.args?.["command-line"]),
    ["info version", "help", "info", "info status", "bogus"],
  );
  assertEquals(log.map((r) => r.execute), Array(3).fill("human-monitor-command"));
});

test("formatEventLine, defaultHistoryPath, readLines", async () => {
  const ev: QmpEvent = {
    event: "RESET",
    data: { guest: false, reason: "host-qmp-system-reset" },
    timestamp: { seconds: 0, microseconds: 0 },
    time: new Date(2024, 0, 1, 9, 5, 7, 42),
    seq: 1,
  };
  assertEquals(
    formatEventLine(ev),
    `[09:05:07.042] event RESET {"guest":false,"reason":"host-qmp-system-reset"}`,
  );
  assertEquals(
    formatEventLine({ ...ev, event: "STOP", data: undefined, time: undefined }),
    "[--:--:--] event STOP",
  );
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  assertEquals(
    defaultHistoryPath(env({ XDG_STATE_HOME: "/s", HOME: "/h" })),
    "/s/qmpkit/history",
  );
  assertEquals(defaultHistoryPath(env({ HOME: "/h" })), "/h/.qmp_history");
  assertEquals(defaultHistoryPath(env({})), undefined);
  const enc = new TextEncoder();
  const stream = ReadableStream.from([enc.encode("a\r\nb"), enc.encode("c\n\nd")]);
  const lines: string[] = [];
  for await (const l of readLines(stream)) lines.push(l);
  assertEquals(lines, ["a", "bc", "", "d"]);
});
