/**
 * An ad-hoc script: attach to a running VM, print its state, then follow its
 * events until SHUTDOWN (or Ctrl-C). Survives a monitor restart.
 *
 *   qemu-system-x86_64 -M pc -display none -qmp unix:/tmp/vm1.sock,server=on,wait=off &
 *   deno run --allow-read=/tmp/vm1.sock --allow-write=/tmp/vm1.sock \
 *     --allow-net=unix:/tmp/vm1.sock examples/watch.ts unix:/tmp/vm1.sock
 *
 * @module
 */
import { connect } from "../mod.ts";

const address = Deno.args[0];
if (!address) {
  console.error("usage: watch.ts ADDRESS   (unix:/path/qmp.sock or HOST:PORT)");
  Deno.exit(2);
}

await using qmp = await connect(address, {
  retry: true,
  timeout: "10s",
  reconnect: {
    maxTries: 20,
    onDisconnect: (e) => console.error(`lost the monitor (${e.message}); reconnecting...`),
    onReconnect: ({ attempt }) => console.error(`reconnected (attempt ${attempt})`),
  },
});
const { qemu } = qmp.greeting.version;
const status = await qmp.execute("query-status");
const { name } = await qmp.execute("query-name");
console.log(
  `QEMU ${qemu.major}.${qemu.minor}.${qemu.micro}, ${name ?? "(unnamed)"}: ${status.status}`,
);

const stop = new AbortController();
Deno.addSignalListener("SIGINT", () => stop.abort());
try {
  for await (const ev of qmp.events({ signal: stop.signal })) {
    console.log(
      ev.time?.toISOString() ?? "-",
      ev.event,
      ev.data === undefined ? "" : JSON.stringify(ev.data),
    );
    if (ev.event === "SHUTDOWN") break;
  }
} catch (e) {
  if (!stop.signal.aborted) throw e; // Ctrl-C ends the listener with an AbortError
}
