/**
 * The smallest qmpkit one-shot: connect (greeting + negotiation),
 * `query-status`, print. For bench/cli_startup.ts, to separate the CLI's own
 * start-up cost from the library's and Deno's.
 *
 *   deno run --allow-read --allow-write --allow-net bench/baselines/oneshot.ts unix:/path/qmp.sock
 *
 * @module
 */
import { connect } from "../../mod.ts";

await using qmp = await connect(Deno.args[0]);
console.log(JSON.stringify(await qmp.execute("query-status")));
