/**
 * `deno task play`: runs playbooks (see `scripts/cli/run.ts` and `--help`).
 *
 *   deno run --allow-read --allow-write --allow-net --allow-run --allow-env scripts/play.ts examples/
 *
 * @module
 */
import { runCommand } from "./cli/run.ts";

if (import.meta.main) {
  let code: number;
  try {
    code = await runCommand(Deno.args);
  } catch (e) {
    // A bug or an environment problem outside any playbook: one line, the stack with --verbose.
    const verbose = Deno.args.includes("--verbose") || Deno.args.includes("-v");
    const text = e instanceof Error ? (verbose ? e.stack ?? e.message : e.message) : String(e);
    console.error(
      `play: error: ${verbose ? text : text.split("\n")[0]}` +
        (verbose ? "" : " (--verbose for details)"),
    );
    code = 1;
  }
  Deno.exit(code);
}
