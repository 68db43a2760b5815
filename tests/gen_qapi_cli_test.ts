/**
 * `scripts/gen-qapi.ts` as a command: strict arguments (usage errors exit 2),
 * connection and launch failures exit 1, each reported in one line.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type Run, runDeno } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const GEN = fileURLToPath(new URL("../scripts/gen-qapi.ts", import.meta.url));
const PERMS = ["--allow-read", "--allow-write", "--allow-run", "--allow-net", "--allow-env"];

/** Runs scripts/gen-qapi.ts from the repository root, killed after 60 s. */
function gen(...args: string[]): Promise<Run> {
  return runDeno(GEN, args, { cwd: ROOT, timeoutMs: 60_000, flags: PERMS });
}

Deno.test("gen-qapi: usage errors exit 2 and name the problem", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-gen-qapi-test-" });
  try {
    // --check --out: should a case wrongly run, it writes nothing into the repository.
    const out = ["--check", "--out", `${dir}/types.ts`];
    const cases: [string[], RegExp][] = [
      [["--launch", "--bogus", "1", ...out], /Unknown option '--bogus'/],
      [["--bogus"], /Unknown option '--bogus'/],
      [["--schema", "a.json", "--qmp", "unix:/x", ...out], /--schema and --qmp conflict/],
      [[...out], /one of --schema, --qmp, --launch is required/],
      [["stray", ...out], /one of --schema, --qmp, --launch is required|unexpected argument/],
      [["--launch", "a", "b", ...out], /--launch takes one BINARY/],
    ];
    for (const [args, pattern] of cases) {
      const r = await gen(...args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, pattern, args.join(" "));
      assert.match(r.stderr, /^gen-qapi: error: .*\(see gen-qapi --help\)\n$/, r.stderr);
    }
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gen-qapi: connection and launch failures exit 1, one line, CLI advice", async () => {
  const nowhere = await gen("--qmp", "/tmp/nonexistent.sock");
  assert.equal(nowhere.code, 1, nowhere.stderr);
  assert.match(nowhere.stderr, /No socket exists at that path.*Use --retry/);
  assert.doesNotMatch(nowhere.stderr, /retry: true/);
  assert.equal(nowhere.stderr.trimEnd().split("\n").length, 1, nowhere.stderr);

  const missing = await gen("--launch", "/nonexistent/qemu");
  assert.equal(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, /Cannot start \/nonexistent\/qemu: no such file/);
  assert.doesNotMatch(missing.stderr, /on PATH/);
  assert.equal(missing.stderr.trimEnd().split("\n").length, 1, missing.stderr);

  const verbose = await gen("--qmp", "/tmp/nonexistent.sock", "--verbose");
  assert.equal(verbose.code, 1, verbose.stderr);
  assert.match(verbose.stderr, /at \w+ \(\S*lib\/transport\.ts:\d+/, "--verbose shows the stack");
});

Deno.test("gen-qapi: --schema --check still works (the generated types are up to date)", async () => {
  const r = await gen("--schema", "tests/fixtures/qmp-schema-7.2.json", "--check");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /is up to date/);
});
