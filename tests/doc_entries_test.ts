/**
 * The public entries' documentation: `mod.ts` documents the hand-written API
 * only (a reader can find it), the generated QAPI types have their own entry
 * (`qapi.ts`, `@qmpkit/qmpkit/qapi` in deno.json), and doc lint holds for both
 * (every type a signature uses is public in one of them).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const GENERATED = new URL("../lib/qapi/types.ts", import.meta.url).href;
const AGENT_GENERATED = new URL("../lib/qapi/agent_types.ts", import.meta.url).href;

/** Names `deno doc --json FILE` documents. */
async function documented(file: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", file],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const doc = JSON.parse(new TextDecoder().decode(out.stdout));
  const entry = doc.nodes[new URL(file, ROOT).href];
  return entry.symbols.map((s: { name: string }) => s.name);
}

/** Every type `lib/qapi/types.ts` (or `file`) exports. */
async function generatedNames(file = GENERATED): Promise<string[]> {
  const text = await Deno.readTextFile(new URL(file));
  return [...text.matchAll(/^export (?:type|interface) (\w+)/gm)].map((m) => m[1]);
}

Deno.test("mod.ts documents the hand-written API, not the 710 generated types", async () => {
  const names = await documented("mod.ts");
  const agent = await generatedNames(AGENT_GENERATED);
  const generated = new Set([...await generatedNames(), ...agent]);
  assert.ok(generated.size >= 750, `${generated.size} generated types`);
  const fromQapi = names.filter((n) => generated.has(n));
  // Only the few the clients' signatures are written in (QmpTimestamp: QmpEvent's timestamp).
  assert.deepEqual(fromQapi.sort(), [
    "AgentCommandArgs",
    "AgentCommandName",
    "AgentCommandReturn",
    "CommandArgs",
    "CommandName",
    "CommandReturn",
    "EventData",
    "EventName",
    "GuestAgentInfo",
    "GuestNetworkInterface",
    "GuestOSInfo",
    "QmpTimestamp",
  ]);
  // The hand-written API alone (client, launcher, agent, runner): far from the 776 generated.
  assert.ok(names.length < 250, `mod.ts documents ${names.length} entries`);
  for (
    const api of ["connect", "QmpClient", "launch", "playbook", "QmpError", "MonitorBusyError"]
  ) {
    assert.ok(names.includes(api), `${api} is documented`);
  }
});

Deno.test("qapi.ts exports every generated type, and deno.json exports it as ./qapi", async () => {
  const names = new Set(await documented("qapi.ts"));
  for (const n of [...await generatedNames(), ...await generatedNames(AGENT_GENERATED)]) {
    assert.ok(names.has(n), `${n} is exported by qapi.ts`);
  }
  for (const n of ["StatusInfo", "QmpCommands", "QmpEvents", "BlockdevOptions", "RunState"]) {
    assert.ok(names.has(n), n);
  }
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.equal(config.exports["./qapi"], "./qapi.ts");
  assert.equal(config.exports["."], "./mod.ts");
  assert.ok(config.publish.include.includes("qapi.ts"), "qapi.ts is published");
  assert.match(config.tasks.check, /deno doc --lint mod\.ts qapi\.ts/);
});

Deno.test("doc lint holds for both entries together", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--lint", "mod.ts", "qapi.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr).slice(-2000));
});
