/**
 * Exact integers (issue 12, item 1) against real QEMU: uint64 values beyond
 * 2^53 read through the library and printed by the `qmp` CLI keep every digit,
 * and bigint arguments (library) and long integer arguments (CLI) reach QEMU
 * exactly. The values are QEMU 7.2's own: the qemu64 CPU's `lbr-fmt` property
 * is ~0x3f = 18446744073709551552, `max-bandwidth` is a uint64.
 */
import assert from "node:assert/strict";
import { connect, parseJson, stringifyJson } from "../mod.ts";
import { startQemu, startQemuForClients, within } from "./helpers/qemu.ts";
import { qmp as runQmp, runDeno } from "./helpers/cli.ts";

const LBR_FMT = 18446744073709551552n;
/** 2^53 + 1: the smallest integer a double cannot hold (read back as ...992 before). */
const BW = 9007199254740993n;
/** 2^60 + 512: a double holds it exactly, but JSON.stringify prints it as ...847500. */
const SIZE = 1152921504606847488n;
const CPU = "/machine/unattached/device[0]";

Deno.test("exact integers (QEMU): qom-get, cpu model expansion, migrate parameters, block sizes", async () => {
  await using qemu = await startQemu({ machine: "pc", paused: true });
  const transcript: unknown[] = [];
  await using qmp = await connect(qemu.address, {
    timeout: "10s",
    transcript: (e) => transcript.push(e.message),
  });
  await within(
    (async () => {
      // The path is the machine's first CPU.
      const type = await qmp.execute("qom-get", { path: CPU, property: "type" });
      assert.equal(type, "qemu64-x86_64-cpu");
      const lbr = await qmp.execute("qom-get", { path: CPU, property: "lbr-fmt" });
      assert.equal(lbr, LBR_FMT);

      const expansion = await qmp.execute("query-cpu-model-expansion", {
        type: "full",
        model: { name: "qemu64" },
      });
      const props = expansion.model.props as Record<string, unknown>;
      assert.equal(props["lbr-fmt"], LBR_FMT);
      assert.equal(typeof props["level"], "number", "small integers stay numbers");

      await qmp.execute("migrate-set-parameters", { "max-bandwidth": BW });
      assert.equal((await qmp.execute("query-migrate-parameters"))["max-bandwidth"], BW);
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": 18446744073709551615n });
      assert.equal(
        (await qmp.execute("query-migrate-parameters"))["max-bandwidth"],
        18446744073709551615n,
      );
      // Ordinary numbers are still accepted, and come back as numbers.
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": 33554432 });
      assert.equal((await qmp.execute("query-migrate-parameters"))["max-bandwidth"], 33554432);

      await qmp.execute("blockdev-add", { driver: "null-co", "node-name": "big", size: SIZE });
      const nodes = await qmp.execute("query-named-block-nodes");
      const big = nodes.find((n) => n["node-name"] === "big");
      assert.equal(big?.image["virtual-size"], SIZE);
    })(),
    60_000,
    "exact integer round trips",
  );
  // What the transcript hook saw, written out, keeps every digit.
  const text = transcript.map((m) => stringifyJson(m)).join("\n");
  assert.match(text, /"return":18446744073709551552[,}]/);
  assert.match(text, /"max-bandwidth":9007199254740993[,}]/);
  assert.match(text, /"size":1152921504606847488[,}]/);
});

const PERMS = ["--allow-read", "--allow-write", "--allow-net", "--allow-run", "--allow-env"];

/** Runs the real CLI (`deno run scripts/qmp.ts ...`, killed after 30 s); it must exit 0. */
async function qmp(args: string[], stdin?: string): Promise<{ code: number; stdout: string }> {
  const r = await runQmp(args, { stdin });
  assert.equal(r.code, 0, `qmp ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r;
}

Deno.test("exact integers (QEMU): the qmp CLI sends and prints integers beyond 2^53 exactly", async () => {
  await using qemu = await startQemuForClients({
    machine: "pc",
    paused: true,
    extraArgs: ["-blockdev", `driver=null-co,node-name=big,size=${SIZE}`],
  });
  const a = qemu.address;
  // exec: a reply that is one big integer, compact and pretty.
  const args = ["qom-get", `path=${CPU}`, "property=lbr-fmt"];
  assert.equal((await qmp(["exec", a, ...args])).stdout, `${LBR_FMT}\n`);
  assert.equal((await qmp(["exec", "--pretty", a, ...args])).stdout, `${LBR_FMT}\n`);
  const expansion = await qmp([
    "exec",
    "--pretty",
    a,
    "query-cpu-model-expansion",
    "type=full",
    "model.name=qemu64",
  ]);
  assert.match(expansion.stdout, /\n {6}"lbr-fmt": 18446744073709551552,?\n/);

  // exec: key=value arguments are sent exactly, and read back exactly.
  await qmp(["exec", a, "migrate-set-parameters", `max-bandwidth=${BW}`]);
  const params = await qmp(["exec", a, "query-migrate-parameters"]);
  assert.match(params.stdout, /"max-bandwidth":9007199254740993[,}]/);

  // shell (batch): a raw JSON command line, then a key=value query.
  const shell = await qmp(
    ["shell", a],
    '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 18446744073709551615}}\n' +
      "query-migrate-parameters\n",
  );
  assert.match(shell.stdout, /"max-bandwidth":18446744073709551615[,}]/);

  // info --json: a block node's virtual size beyond 2^53.
  const info = await qmp(["info", "--json", a]);
  assert.match(info.stdout, /"virtualSize":1152921504606847488[,}]/);
});

const PLAYBOOK_URL = new URL("../lib/runner/playbook.ts", import.meta.url).href;
const PLAY_TS = new URL("../scripts/play.ts", import.meta.url).pathname;

Deno.test("exact integers (QEMU): the runner's --record file and reports keep every digit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-ints-test-" });
  try {
    const file = `${dir}/ints.playbook.ts`;
    await Deno.writeTextFile(
      file,
      `import { playbook } from "${PLAYBOOK_URL}";
export default playbook({ name: "ints", vm: { machine: "pc", paused: true, memory: 64 } }, async (t) => {
  await t.step("lbr-fmt", async () => {
    const v = await t.qmp.execute("qom-get", { path: "${CPU}", property: "lbr-fmt" });
    t.expect(v).toBe(${LBR_FMT}n);
  });
  await t.step("max-bandwidth", async () => {
    await t.qmp.execute("migrate-set-parameters", { "max-bandwidth": ${BW}n });
    t.expect((await t.qmp.execute("query-migrate-parameters"))["max-bandwidth"]).toBe(${BW}n);
  });
  await t.step("fails, to show the transcript", () => t.expect(1).toBe(2));
});
`,
    );
    const { code, stdout, stderr } = await runDeno(
      PLAY_TS,
      [file, "--record", `${dir}/rec`, "--reporter", "json"],
      { flags: ["--no-check", ...PERMS], timeoutMs: 60_000 },
    );
    assert.equal(code, 1, stderr);
    const report = parseJson(stdout);
    const steps = report.playbooks[0].steps.map((s: { name: string; status: string }) =>
      `${s.name}: ${s.status}`
    );
    assert.deepEqual(steps, [
      "lbr-fmt: passed",
      "max-bandwidth: passed",
      "fails, to show the transcript: failed",
    ]);
    // The JSON report's failure carries the last QMP messages, exact.
    assert.match(stdout, /"return": 18446744073709551552,?\n/);
    assert.match(stdout, /"max-bandwidth": 9007199254740993,?\n/);
    // The record file: one JSON line per message, exact.
    const rec = await Deno.readTextFile(`${dir}/rec/ints.jsonl`);
    assert.match(rec, /"message":\{"return":18446744073709551552,"id":\d+\}/);
    assert.match(rec, /"arguments":\{"max-bandwidth":9007199254740993\}/);
    const records = rec.trimEnd().split("\n").map((l) => parseJson(l));
    assert.ok(records.some((r) => r.message.return === LBR_FMT));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
