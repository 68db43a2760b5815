/**
 * A fake QMP monitor on the fake server (tests/helpers/fake_server.ts) for
 * CLI tests: it negotiates, answers `query-status` (running), hands the
 * commands the test names to its handlers, and answers anything else with
 * `CommandNotFound`, like QEMU.
 *
 * @module
 */
import { type FakeConn, type FakeServer, startFakeServer } from "./fake_server.ts";

/** Answers one request (or deliberately does not). */
export type FakeHandler = (req: Record<string, unknown>, conn: FakeConn) => Promise<void> | void;

/** What the fake monitor's `query-status` returns. */
export const FAKE_STATUS = { status: "running", singlestep: false, running: true };

/** Starts a fake monitor; see the module docs. */
export function fakeMonitor(handlers: Record<string, FakeHandler> = {}): Promise<FakeServer> {
  return startFakeServer(async (conn) => {
    await conn.handshake();
    while (true) {
      let req: Record<string, unknown>;
      try {
        req = await conn.recv(60_000);
      } catch {
        return; // the client left
      }
      const h = handlers[req.execute as string];
      if (h) await h(req, conn);
      else if (req.execute === "query-status") await conn.reply(req, FAKE_STATUS);
      else {
        await conn.send({
          error: {
            class: "CommandNotFound",
            desc: `The command ${req.execute} has not been found`,
          },
          id: req.id,
        });
      }
    }
  });
}
