/**
 * Messages that arrive complete *before* a fault must still be delivered,
 * whatever the read boundaries. Here the server writes a valid reply, a valid
 * event and then the fault in one write, so the client reads them in one
 * chunk.
 *
 * Regression test: `JsonObjectFramer.push()` used to throw on the fault and
 * discard the objects it had already completed from the same chunk, so the
 * reply's command rejected with ConnectionClosedError and the event was lost,
 * while the same bytes split over two reads delivered both (fixed in the
 * framing commit "messages completed before bad bytes in the same read are
 * delivered, then the error").
 */
import assert from "node:assert/strict";
import { connect } from "../../lib/client.ts";
import { ConnectionClosedError, ProtocolError } from "../../lib/errors.ts";
import { startFakeServer } from "../helpers/fake_server.ts";
import { allSettledOnce, assertNoUnhandled, guardUnhandled, track } from "./harness.ts";

guardUnhandled();

const FAULTS: [string, string, RegExp][] = [
  ["garbage", "garbage!!\r\n", /bytes that are not JSON/],
  ["invalid JSON object", '{"return": nope}\r\n', /invalid JSON/],
  ["oversize message", `{"return": "${"x".repeat(4096)}"}\r\n`, /larger than the 2048-byte limit/],
];

for (const [what, fault, match] of FAULTS) {
  for (const split of [false, true]) {
    const how = split ? "in a later read" : "in the same read";
    Deno.test(`a reply and an event before ${what} ${how} are still delivered`, async () => {
      await using server = await startFakeServer(async (c) => {
        await c.handshake();
        const a = await c.recv();
        await c.recv();
        const good = JSON.stringify({ return: { ok: 1 }, id: a.id }) + "\r\n" +
          JSON.stringify({ event: "STOP", timestamp: { seconds: 1, microseconds: 2 } }) + "\r\n";
        if (split) {
          await c.write(good);
          await new Promise((r) => setTimeout(r, 50)); // the client reads `good` alone
          await c.write(fault);
        } else {
          await c.write(good + fault);
        }
        await c.eof;
      });
      await using client = await connect(server.address, {
        timeout: "5s",
        commandTimeout: "5s",
        maxMessageSize: 2048,
      });
      const stop = track("waitEvent(STOP)", client.waitEvent("STOP", { timeout: "5s" }));
      const first = track("query-status", client.execute("query-status"));
      const second = track("query-name", client.execute("query-name"));
      await allSettledOnce([stop, first, second], 8000);
      // The one whose reply never came fails, with the fault as the cause.
      assert.ok(second.error instanceof ConnectionClosedError, String(second.error));
      assert.equal(second.error.reason, "error");
      assert.ok(second.error.cause instanceof ProtocolError);
      assert.match(second.error.cause.message, match);
      // Those that arrived complete before the fault are delivered.
      assert.equal(first.outcome, "resolved", `query-status: ${first.error}`);
      assert.deepEqual(first.value, { ok: 1 });
      assert.equal(stop.outcome, "resolved", `STOP: ${stop.error}`);
      await assertNoUnhandled();
    });
  }
}
