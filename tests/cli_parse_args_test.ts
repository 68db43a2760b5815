/**
 * scripts/cli/parse_args.ts against `node:util` `parseArgs` (strict, with
 * positionals): the same values, positionals and error codes for the shapes
 * the `qmp` subcommands use.
 */
import assert from "node:assert/strict";
import { parseArgs as nodeParseArgs } from "node:util";
import { type OptionSpecs, parseArgs } from "../scripts/cli/parse_args.ts";

const OPTIONS: OptionSpecs = {
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
  pretty: { type: "boolean" },
  "connect-timeout": { type: "string" },
  name: { type: "string", short: "n", multiple: true },
  count: { type: "string", short: "c" },
  reporter: { type: "string", default: "pretty" },
  // The shapes of qmp's --ssh-option (repeatable, KEY=VALUE) and qmp shell's -N.
  "ssh-option": { type: "string", multiple: true },
  "skip-negotiation": { type: "boolean", short: "N" },
};

const CASES: string[][] = [
  [],
  ["unix:/x", "query-status"],
  ["unix:/x", "--pretty", "query-status", "a=1"],
  ["--connect-timeout", "2s", "unix:/x"],
  ["--connect-timeout=2s", "unix:/x"],
  ["--connect-timeout=-1"],
  ["-v", "-h"],
  ["-vh", "x"],
  ["-n", "STOP", "-nRESUME", "--name", "RESET", "--name=X"],
  ["-vc", "3"],
  ["-vc3"],
  ["-", "x"],
  ["a", "--", "--pretty", "-v"],
  ["--reporter", "dot"],
  ["--count", "1", "--count", "2"],
  ["--ssh-option", "StrictHostKeyChecking=no", "--ssh-option=IdentityFile=/k", "ssh://h/s"],
  ["-N", "unix:/x"],
  ["-vN"],
  ["--skip-negotiation"],
  // errors
  ["--nope"],
  ["--nope=1"],
  ["-x"],
  ["-vx"],
  ["--pretty=yes"],
  ["--skip-negotiation=1"],
  ["--ssh-option"],
  ["--count"],
  ["-c"],
  ["--count", "-v"],
  ["--no-pretty"],
  ["-1"],
];

function run(fn: () => { values: Record<string, unknown>; positionals: string[] }) {
  try {
    const { values, positionals } = fn();
    return { values: { ...values }, positionals };
  } catch (e) {
    return { code: (e as { code?: string }).code };
  }
}

Deno.test("parse_args agrees with node:util parseArgs (values, positionals, error codes)", () => {
  for (const args of CASES) {
    const ours = run(() => parseArgs({ args, options: OPTIONS }));
    const node = run(() =>
      nodeParseArgs({
        args,
        options: OPTIONS as never,
        allowPositionals: true,
        strict: true,
      }) as { values: Record<string, unknown>; positionals: string[] }
    );
    assert.deepEqual(ours, node, `args ${JSON.stringify(args)}`);
  }
});

Deno.test("parse_args errors quote the flag as node:util does", () => {
  const message = (args: string[]) => {
    try {
      parseArgs({ args, options: OPTIONS });
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  assert.match(message(["--nope=1"]), /^Unknown option '--nope'/);
  assert.match(message(["--pretty=yes"]), /^Option '--pretty' does not take an argument/);
  assert.match(message(["--count"]), /^Option '--count <value>' argument missing/);
  assert.match(message(["--count", "-v"]), /^Option '--count' argument is ambiguous/);
});
