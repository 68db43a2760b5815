/**
 * Raw one-shot QMP client in Deno, the counterpart of `oneshot.py`: connect
 * to a unix socket, read the greeting, negotiate, run `query-status`, print
 * its return value as JSON. No library, no error handling: the realistic
 * floor of a Deno one-shot for bench/cli_startup.ts (runtime start-up plus
 * the protocol's round trips).
 *
 *   deno run --allow-read --allow-write --allow-net bench/baselines/oneshot_raw.ts /path/qmp.sock
 *
 * @module
 */
const conn = await Deno.connect({ transport: "unix", path: Deno.args[0] });
const buf = new Uint8Array(65536);
const decoder = new TextDecoder();
let pending = "";

/** The next line from the socket. */
async function line(): Promise<string> {
  while (true) {
    const i = pending.indexOf("\n");
    if (i >= 0) {
      const text = pending.slice(0, i);
      pending = pending.slice(i + 1);
      return text;
    }
    const n = await conn.read(buf);
    if (n === null) throw new Error("the monitor closed the connection");
    pending += decoder.decode(buf.subarray(0, n));
  }
}

const encoder = new TextEncoder();
await line(); // greeting
await conn.write(encoder.encode('{"execute": "qmp_capabilities", "id": 1}\n'));
await line();
await conn.write(encoder.encode('{"execute": "query-status", "id": 2}\n'));
while (true) {
  const reply = JSON.parse(await line());
  if (reply.id === 2) {
    console.log(JSON.stringify(reply.return));
    break;
  }
}
conn.close();
