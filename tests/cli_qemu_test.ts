/**
 * The `qmp` CLI against real QEMU: each subcommand runs as a subprocess
 * (`deno run scripts/qmp.ts ...`) and its output is parsed and checked.
 * QEMU is started per test (tests/helpers/qemu.ts) and always killed.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  strictEqual as assertStrictEquals,
} from "node:assert/strict";
import { connect } from "../mod.ts";
import { delay, startQemuForClients, within } from "./helpers/qemu.ts";

const QMP_TS = new URL("../scripts/qmp.ts", import.meta.url).pathname;
const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** A running CLI: output so far, and the result once it exits (killed after `timeoutMs`). */
interface Cli {
  child: Deno.ChildProcess;
  /** Output captured so far. */
  output: { stdout: string; stderr: string };
  result: Promise<Run>;
}

function startCli(
  args: string[],
  opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Cli {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMS, QMP_TS, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...opts.env },
  }).spawn();
  const output = { stdout: "", stderr: "" };
  const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) output[key] += decoder.decode(chunk, { stream: true });
  };
  const result = (async () => {
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, opts.timeoutMs ?? 30_000);
    try {
      if (opts.stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode(opts.stdin));
        await w.close();
      }
      const [, , status] = await Promise.all([
        collect(child.stdout, "stdout"),
        collect(child.stderr, "stderr"),
        child.status,
      ]);
      return { code: status.code, ...output };
    } finally {
      clearTimeout(timer);
    }
  })();
  return { child, output, result };
}

/** Polls until `cond()` holds, failing after `ms`. */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await delay(20);
  }
}

/** Runs the CLI to completion. */
function qmp(
  args: string[],
  opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Run> {
  return startCli(args, opts).result;
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l !== "");
}

function show(r: Run): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** A temp dir for a second monitor socket; removed on dispose. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "qmpkit-cli-test-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

Deno.test("qmp exec: query-status prints the return value as JSON", async () => {
  await using qemu = await startQemuForClients({ machine: "pc", paused: true });
  const r = await qmp(["exec", qemu.address, "query-status"]);
  assertEquals(r.code, 0, show(r));
  assertEquals(lines(r.stdout).length, 1, "compact (one line) when piped");
  assertEquals(JSON.parse(r.stdout), { status: "prelaunch", singlestep: false, running: false });
  assertEquals(r.stderr, "");

  const pretty = await qmp(["exec", qemu.socketPath, "query-status", "--pretty"]);
  assertEquals(pretty.code, 0, show(pretty));
  assert(lines(pretty.stdout).length > 1, "indented with --pretty");
  assertEquals(JSON.parse(pretty.stdout).status, "prelaunch");

  const raw = await qmp(["exec", qemu.address, "--raw", "query-status"]);
  const msg = JSON.parse(raw.stdout);
  assertEquals(msg.return.status, "prelaunch");
  assertStrictEquals(typeof msg.id, "number");
});

Deno.test("qmp exec: key=value and dotted keys reach QEMU", async () => {
  await using qemu = await startQemuForClients({
    machine: "pc",
    paused: true,
    extraArgs: ["-device", "qemu-xhci,id=xhci"],
  });
  const add = await qmp(["exec", qemu.address, "device_add", "driver=usb-tablet", "id=t0"]);
  assertEquals([add.code, add.stdout], [0, "{}\n"], show(add));
  const list = await qmp(["exec", qemu.address, "qom-list", "path=/machine/peripheral"]);
  assertEquals(list.code, 0, show(list));
  assert(
    JSON.parse(list.stdout).some((p: { name: string; type: string }) =>
      p.name === "t0" && p.type === "child<usb-tablet>"
    ),
    list.stdout,
  );

  // Nested objects from dotted keys; numbers and booleans as JSON literals
  // (QEMU rejects "4096" as a string for an int member).
  const blk = await qmp([
    "exec",
    qemu.address,
    "blockdev-add",
    "driver=raw",
    "node-name=r0",
    "read-only=true",
    "file.driver=null-co",
    "file.node-name=r0-file",
    "file.size=4096",
  ]);
  assertEquals(blk.code, 0, show(blk));
  const nodes = await qmp(["exec", qemu.address, "query-named-block-nodes"]);
  const byName = new Map(
    JSON.parse(nodes.stdout).map((n: Record<string, unknown>) => [n["node-name"], n]),
  );
  const r0 = byName.get("r0") as Record<string, { "virtual-size": number }>;
  assertEquals([r0.drv, r0.ro, r0.image["virtual-size"]], ["raw", true, 4096]);
  assertEquals((byName.get("r0-file") as Record<string, unknown>).drv, "null-co");

  const typed = await qmp([
    "exec",
    qemu.address,
    "qom-get",
    "--args",
    `{"path": "/machine"}`,
    "property=type",
  ]);
  assertEquals(typed.code, 0, show(typed));
  assert(/^pc-i440fx-.*-machine$/.test(JSON.parse(typed.stdout)), typed.stdout);

  const hmp = await qmp(["exec", qemu.address, "--hmp", "info version"]);
  assertEquals(hmp.code, 0, show(hmp));
  assert(/^\d+\.\d+\.\d+/.test(hmp.stdout), hmp.stdout);
  const usb = await qmp(["exec", qemu.address, "--hmp", "info usb"]);
  assert(usb.stdout.includes("QEMU USB Tablet"), show(usb));
});

Deno.test("qmp exec: exit status 1 for QMP and connection errors, 2 for usage errors", async () => {
  await using qemu = await startQemuForClients({ machine: "none" });
  await using dir = await tempDir();

  const unknown = await qmp(["exec", qemu.address, "query-nope"]);
  assertEquals(unknown.code, 1, show(unknown));
  assertEquals(unknown.stdout, "");
  assertEquals(lines(unknown.stderr).length, 1, "one line on stderr");
  assert(unknown.stderr.includes("CommandNotFound"), unknown.stderr);
  assert(unknown.stderr.startsWith("qmp exec: error: query-nope failed"), unknown.stderr);

  const badArg = await qmp(["exec", qemu.address, "query-status", "foo=1"]);
  assertEquals(badArg.code, 1, show(badArg));
  assert(/Parameter 'foo' is unexpected \(GenericError\)/.test(badArg.stderr), badArg.stderr);

  const badType = await qmp(["exec", qemu.address, "qom-list", "path=42"]);
  assertEquals(badType.code, 1, show(badType));
  assert(badType.stderr.includes("GenericError"), badType.stderr);

  const hmpErr = await qmp(["exec", qemu.address, "--hmp", "bogus"]);
  assertEquals(hmpErr.code, 1, show(hmpErr));
  assert(hmpErr.stderr.includes("unknown command: 'bogus'"), hmpErr.stderr);

  // Usage errors: nothing is sent (exit 2).
  for (
    const [args, pattern] of [
      [["exec", qemu.address, "device_add", "id=a", "id=b"], /"id" is given more than once/],
      [["exec", qemu.address, "device_add", "a=1", "a.b=2"], /both a value and an object/],
      [["exec", qemu.address, "device_add", "novalue"], /Expected key=value/],
      [["exec", qemu.address], /Missing COMMAND/],
      [["exec"], /Missing ADDRESS/],
      [["exec", "nonsense", "query-status"], /no socket named "nonsense" in the current/],
      [["exec", "tcp:127.0.0.1:notaport", "query-status"], /port "notaport"/],
      [["exec", qemu.address, "query-status", "--bogus"], /unknown option --bogus/],
      [["exec", qemu.address, "query-status", "--timeout", "soon"], /--timeout: Invalid duration/],
      [["exec", qemu.address, "qom-get", "--args", "[1]"], /--args must be a JSON object/],
      [["nosuchcommand"], /unknown command "nosuchcommand"/],
    ] as [string[], RegExp][]
  ) {
    const r = await qmp(args);
    assertEquals(r.code, 2, `${args.join(" ")}: ${show(r)}`);
    assert(pattern.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
    assertEquals(lines(r.stderr).length, 1, r.stderr);
  }

  const missing = await qmp(["exec", `${dir.path}/nope.sock`, "query-status"]);
  assertEquals(missing.code, 1, show(missing));
  assert(missing.stderr.includes("No such file"), missing.stderr);

  const verbose = await qmp(["exec", `unix:${dir.path}/nope.sock`, "query-status", "--verbose"]);
  assertEquals(verbose.code, 1);
  assert(lines(verbose.stderr).length > 1 && verbose.stderr.includes("caused by:"), verbose.stderr);

  const help = await qmp(["exec", "--help"]);
  assertEquals(help.code, 0);
  assert(help.stdout.startsWith("Usage: qmp exec ADDRESS COMMAND"), help.stdout);
  const version = await qmp(["--version"]);
  assert(/^qmp \(qmpkit\) \d+\.\d+\.\d+\n$/.test(version.stdout), version.stdout);
  const main = await qmp([]);
  assertEquals(main.code, 2);
  assert(main.stderr.includes("Commands:"));
  const helpInfo = await qmp(["help", "info"]);
  assert(helpInfo.stdout.startsWith("Usage: qmp info"), helpInfo.stdout);
});

Deno.test("qmp exec: TCP addresses (HOST:PORT and tcp:HOST:PORT)", async () => {
  await using qemu = await startQemuForClients({ machine: "none", tcp: true });
  for (const address of [`127.0.0.1:${qemu.port}`, `tcp:127.0.0.1:${qemu.port}`]) {
    const r = await qmp(["exec", address, "query-status"]);
    assertEquals(r.code, 0, show(r));
    assertEquals(JSON.parse(r.stdout).status, "running");
  }
});

Deno.test("qmp exec --launch: a throwaway VM, shut down at exit", async () => {
  const r = await qmp(["exec", "--launch", "--verbose", "query-status"]);
  assertEquals(r.code, 0, show(r));
  assertEquals(JSON.parse(r.stdout).status, "running");
  assert(/quit → exited/.test(r.stderr), `the VM was shut down with quit: ${r.stderr}`);
  const pc = await qmp(["exec", "--launch-args", "-M pc -S -m 64", "query-status"]);
  assertEquals(pc.code, 0, show(pc));
  assertEquals(JSON.parse(pc.stdout).status, "prelaunch");
  const bad = await qmp(["exec", "--launch-args", "-no-such-option", "query-status"]);
  assertEquals(bad.code, 1, show(bad));
  assert(bad.stderr.includes("exited before its QMP monitor was ready"), bad.stderr);
});

const INFO_KEYS = [
  "accelerator",
  "address",
  "block",
  "blockNodes",
  "chardevs",
  "cpus",
  "machine",
  "memory",
  "migration",
  "name",
  "network",
  "pci",
  "status",
  "unavailable",
  "usb",
  "uuid",
  "version",
];

Deno.test("qmp info: readable summary and --json of a -M pc VM", async () => {
  await using qemu = await startQemuForClients({
    machine: "pc",
    paused: true,
    extraArgs: [
      "-name",
      "cli-test-vm",
      "-device",
      "qemu-xhci,id=xhci",
      "-device",
      "usb-tablet,id=tab0",
      "-nic",
      "user,model=e1000,mac=52:54:00:12:34:99",
      "-blockdev",
      "driver=null-co,node-name=null0,size=1048576",
      "-device",
      "virtio-blk-pci,drive=null0,id=vblk0",
    ],
  });
  const r = await qmp(["info", qemu.address, "--json"]);
  assertEquals(r.code, 0, show(r));
  const info = JSON.parse(r.stdout);
  assertEquals(Object.keys(info).sort(), INFO_KEYS);
  assert(/^\d+\.\d+\.\d+$/.test(info.version.qemu), info.version.qemu);
  assertEquals(info.status, { status: "prelaunch", running: false });
  assertEquals(info.name, "cli-test-vm");
  assert(info.machine.type.startsWith("pc-i440fx-"), info.machine.type);
  assertEquals(info.machine.arch, "x86_64");
  assertEquals(info.accelerator.name, "tcg");
  assertEquals(info.cpus.count, 1);
  assertEquals(info.memory.base, 64 * 1024 * 1024);
  assertEquals(info.block.length, 1);
  assertEquals(info.block[0].qdev, "/machine/peripheral/vblk0/virtio-backend");
  assertEquals(info.block[0].inserted.driver, "null-co");
  assertEquals(info.block[0].inserted.virtualSize, 1048576);
  assertEquals(info.blockNodes.map((n: { node: string }) => n.node), ["null0"]);
  assertEquals(info.network[0].props.model, "e1000");
  assertEquals(info.network[0].props.macaddr, "52:54:00:12:34:99");
  assertEquals(info.network[0].peer.props.type, "user");
  assertEquals(info.usb.map((u: { product: string; id: string }) => [u.product, u.id]), [
    ["QEMU USB Tablet", "tab0"],
  ]);
  const classes = info.pci.map((p: { class: string }) => p.class);
  for (const c of ["Host bridge", "USB controller", "Ethernet controller", "SCSI controller"]) {
    assert(classes.includes(c), `${c} in ${classes}`);
  }
  assertEquals(info.pci.find((p: { qdevId: string }) => p.qdevId === "xhci")?.vendor, "1b36");
  assert(info.chardevs.length >= 1);
  assertEquals(info.migration.status, "none");
  assertEquals(info.unavailable, {});

  const text = await qmp(["info", qemu.address]);
  assertEquals(text.code, 0, show(text));
  const rows = text.stdout.split("\n");
  assert(rows[0].startsWith(`QEMU         ${info.version.qemu}`), rows[0]);
  for (
    const expected of [
      "Status       prelaunch (vCPUs stopped)",
      "Name         cli-test-vm",
      `Machine      ${info.machine.type}`,
      "Memory       64 MiB",
      `Block        vblk0: null-co json:{"driver": "null-co", "size": 1048576} (1 MiB, node null0)`,
      "Network      e1000.0: e1000 52:54:00:12:34:99 <-> ",
      "USB          0.0 port 1: QEMU USB Tablet (480 Mb/s) id=tab0",
      "Migration    none",
    ]
  ) {
    assert(rows.some((l) => l.startsWith(expected)), `"${expected}" in\n${text.stdout}`);
  }
});

Deno.test("qmp info: tolerates what a -machine none QEMU lacks (--launch)", async () => {
  const r = await qmp(["info", "--launch", "--json"]);
  assertEquals(r.code, 0, show(r));
  const info = JSON.parse(r.stdout);
  assertEquals(Object.keys(info).sort(), INFO_KEYS);
  assertEquals(info.machine.type, "none");
  assertEquals(info.cpus.count, 0);
  assertEquals(info.usb, null);
  assert(info.unavailable.usb.includes("USB support not enabled"), info.unavailable.usb);
  const text = await qmp(["info", "--launch"]);
  assert(text.stdout.includes("\nUSB          n/a (HMP info usb: Error: USB support not enabled)"));
});

Deno.test("qmp events: --count with events triggered from a second monitor", async () => {
  await using dir = await tempDir();
  const second = `${dir.path}/second.sock`;
  await using qemu = await startQemuForClients({
    machine: "pc",
    paused: true,
    extraArgs: ["-qmp", `unix:${second},server=on,wait=off`],
  });
  await using other = await connect(`unix:${second}`, { retry: true, timeout: "10s" });
  const cli = startCli([
    "events",
    qemu.address,
    "--count",
    "2",
    "--name",
    "STOP",
    "--name",
    "RESUME",
    "--verbose",
  ]);
  // With --verbose it says when it listens (negotiated, filter checked against the schema).
  await waitFor(() => cli.output.stderr.includes("listening on"), 15_000, "events to listen");
  await other.executeRaw("cont");
  await other.executeRaw("system_reset"); // RESET: not selected by --name
  await other.executeRaw("stop");
  const r = await within(cli.result, 5000, "qmp events exit");
  assertEquals(r.code, 0, show(r));
  const events = lines(r.stdout).map((l) => JSON.parse(l));
  assertEquals(events.length, 2, r.stdout);
  for (const ev of events) {
    assertEquals(Object.keys(ev).sort(), ["event", "timestamp"], "no data for STOP/RESUME");
    assertStrictEquals(typeof ev.timestamp.seconds, "number");
  }
  assertEquals(events.map((e) => e.event), ["RESUME", "STOP"]);

  // --timeout: a normal end without --count, a failure with one.
  const quiet = await qmp(["events", qemu.address, "--timeout", "300ms"]);
  assertEquals([quiet.code, quiet.stdout], [0, ""], show(quiet));
  const short = await qmp(["events", qemu.address, "--count", "5", "--timeout", "300ms"]);
  assertEquals(short.code, 1, show(short));
  assert(short.stderr.includes("timed out after 0 of 5 events"), short.stderr);
  const unknown = await qmp(["events", qemu.address, "--name", "STOPP"]);
  assertEquals(unknown.code, 2, show(unknown));
  assert(unknown.stderr.includes(`Unknown event "STOPP" (did you mean STOP?`), unknown.stderr);

  // QEMU going away ends the stream with exit status 1, after the events it sent.
  const watcher = startCli(["events", qemu.address, "--verbose"]);
  await waitFor(() => watcher.output.stderr.includes("listening on"), 15_000, "events to listen");
  await other.executeRaw("system_reset");
  await other.executeRaw("quit").catch(() => {});
  const gone = await within(watcher.result, 10_000, "events after quit");
  assertEquals(gone.code, 1, show(gone));
  assert(gone.stderr.includes("QEMU closed the connection"), gone.stderr);
  const seen = lines(gone.stdout).map((l) => JSON.parse(l));
  assertEquals(seen.map((e) => e.event), ["RESET", "SHUTDOWN"], gone.stdout);
  assertEquals(seen[1].data, { guest: false, reason: "host-qmp-quit" });
  await within(qemu.status, 10_000, "QEMU exit after quit");
});

Deno.test("qmp shell: batch mode through a pipe", async () => {
  await using dir = await tempDir();
  await using qemu = await startQemuForClients({
    machine: "pc",
    paused: true,
    extraArgs: ["-device", "qemu-xhci,id=xhci"],
  });
  const ok = await qmp(["shell", qemu.address], {
    stdin: [
      "query-status",
      "# a comment, then a blank line",
      "",
      "device_add driver=usb-tablet id=t0",
      `{"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}}`,
      "hmp info usb",
      "help device_add",
    ].join("\n") + "\n",
  });
  assertEquals(ok.code, 0, show(ok));
  const out = lines(ok.stdout);
  assertEquals(JSON.parse(out[0]).status, "prelaunch");
  assertEquals(out[1], "{}");
  assert(JSON.parse(out[2]).some((p: { name: string }) => p.name === "t0"), out[2]);
  assert(out[3].includes("Product QEMU USB Tablet, ID: t0"), out[3]);
  assertEquals(out[4], "device_add  [json-cli, json-cli-hotplug]");
  assert(/^ +driver +str$/.test(out[6]), out[6]);
  assertEquals(ok.stderr, "");

  // The first error stops the run (exit 1)...
  const input = "query-status\nquery-nope\nquery-name\n";
  const stop = await qmp(["shell", qemu.address], { stdin: input });
  assertEquals(stop.code, 1, show(stop));
  assertEquals(lines(stop.stdout).length, 1);
  assertEquals(
    stop.stderr,
    "qmp shell: line 2: error: The command query-nope has not been found (CommandNotFound)\n",
  );
  // ...unless --keep-going (still exit 1 at the end).
  const keep = await qmp(["shell", qemu.address, "--keep-going"], { stdin: input });
  assertEquals(keep.code, 1, show(keep));
  assertEquals(lines(keep.stdout).length, 2);
  assertEquals(JSON.parse(lines(keep.stdout)[1]), {});
  const syntax = await qmp(["shell", qemu.address], { stdin: "device_add id\nquery-status\n" });
  assertEquals(syntax.code, 1, show(syntax));
  assertEquals(syntax.stdout, "");
  assert(syntax.stderr.includes(`line 1: error: Expected key=value, got "id"`), syntax.stderr);

  // Transactions, one line and multi-line, with a JSONL log.
  const log = `${dir.path}/session.jsonl`;
  const trans = await qmp(["shell", qemu.address, "--log", log, "--echo"], {
    stdin: [
      "blockdev-add driver=null-co node-name=n0 size=1048576",
      "transaction( block-dirty-bitmap-add node=n0 name=b0, block-dirty-bitmap-add node=n0 name=b1 )",
      "transaction(",
      "block-dirty-bitmap-add node=n0 name=b2 persistent=false",
      ")",
      "query-named-block-nodes",
    ].join("\n"),
  });
  assertEquals(trans.code, 0, show(trans));
  assert(trans.stderr.includes("TRANS> block-dirty-bitmap-add node=n0 name=b2"), trans.stderr);
  const results = lines(trans.stdout);
  assertEquals(results.slice(0, 3), ["{}", "{}", "{}"]);
  const n0 = JSON.parse(results[3]).find((n: { "node-name": string }) => n["node-name"] === "n0");
  assertEquals(n0["dirty-bitmaps"].map((b: { name: string }) => b.name).sort(), ["b0", "b1", "b2"]);
  const records = lines(await Deno.readTextFile(log)).map((l) => JSON.parse(l));
  assertEquals(records.map((r) => r.execute), [
    "blockdev-add",
    "transaction",
    "transaction",
    "query-named-block-nodes",
  ]);
  assertEquals(records[1].arguments.actions[1], {
    type: "block-dirty-bitmap-add",
    data: { node: "n0", name: "b1" },
  });
  assert("return" in records[0] && typeof records[0].time === "string");

  const open = await qmp(["shell", qemu.address], { stdin: "transaction(\nabort\n" });
  assertEquals(open.code, 1, show(open));
  assert(open.stderr.includes("input ended inside transaction("), open.stderr);

  const hmp = await qmp(["shell", qemu.address, "-H"], { stdin: "info status\nbogus\n" });
  assertEquals(hmp.code, 1, show(hmp));
  assertEquals(hmp.stdout, "VM status: paused (prelaunch)\n");
  assert(hmp.stderr.includes("line 2: unknown command: 'bogus'"), hmp.stderr);

  const quit = await qmp(["shell", qemu.address], { stdin: "quit\nquery-status\n" });
  assertEquals(quit.code, 0, show(quit));
  assertEquals(quit.stdout, "{}\n");
  await within(qemu.status, 10_000, "QEMU exit after quit");
});
