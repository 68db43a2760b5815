/**
 * Where `qmp exec ADDR query-status` spends its time, in one process: the
 * runtime's start (until this module runs), loading the CLI's modules for
 * `exec` (`scripts/qmp.ts` and `scripts/cli/exec.ts` with what they import),
 * connect (dial, greeting, negotiation), the command, close. For
 * bench/cli_startup.ts; prints one JSON line of milliseconds.
 *
 *   deno run -A bench/baselines/exec_phases.ts unix:/path/qmp.sock [TREE]
 *
 * TREE is the checkout whose `scripts/` and `lib/` to load (default: this one).
 *
 * @module
 */
const boot = performance.now();
const tree = Deno.args[1]
  ? new URL(`file://${Deno.realPathSync(Deno.args[1])}/`)
  : new URL("../../", import.meta.url);
await import(new URL("scripts/qmp.ts", tree).href);
await import(new URL("scripts/cli/exec.ts", tree).href);
const { connect } = await import(new URL("lib/client.ts", tree).href);
const loaded = performance.now();
const qmp = await connect(Deno.args[0]);
const connected = performance.now();
await qmp.execute("query-status");
const done = performance.now();
await qmp.close();
const closed = performance.now();
console.log(JSON.stringify({
  boot,
  load: loaded - boot,
  connect: connected - loaded,
  command: done - connected,
  close: closed - done,
}));
