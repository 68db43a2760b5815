/**
 * `deno task play`: runs playbooks (see `scripts/cli/run.ts` and `--help`).
 *
 *   deno run --allow-read --allow-write --allow-net --allow-run --allow-env scripts/play.ts examples/
 *
 * @module
 */
import { runCommand } from "./cli/run.ts";

if (import.meta.main) Deno.exit(await runCommand(Deno.args));
