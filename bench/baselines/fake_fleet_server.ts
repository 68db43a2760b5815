/**
 * Fake QMP server for bench/fleet.ts, in its own process so its CPU and memory
 * are not counted as the client's: `tests/helpers/fake_server.ts` (another
 * engineer's test helper), where every connection greets, negotiates, then
 * answers every command like `query-status` until the client closes.
 * Prints the socket address on stdout once listening; runs until killed.
 *
 *   deno run --allow-read --allow-write --allow-net bench/baselines/fake_fleet_server.ts
 *
 * @module
 */
import { FakeEof, startFakeServer } from "../../tests/helpers/fake_server.ts";

const STATUS = { status: "running", singlestep: false, running: true };

await using server = await startFakeServer(async (conn) => {
  try {
    await conn.handshake();
    while (true) await conn.reply(await conn.recv(600_000), STATUS);
  } catch (err) {
    if (!(err instanceof FakeEof)) throw err;
  } finally {
    conn.close();
  }
});
console.log(server.address);
// Until killed; reading stdin to its end (the parent closing it) also ends it.
for await (const _ of Deno.stdin.readable) { /* wait */ }
