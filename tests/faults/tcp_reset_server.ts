/**
 * A small QMP fake server on TCP 127.0.0.1 that can reset connections.
 *
 * tests/helpers/fake_server.ts is unix-only, and Deno's own sockets cannot
 * send a TCP RST: `Deno.Conn` has no SO_LINGER, and closing one with unread
 * input still ended in a plain FIN (EOF) when measured. Node's
 * `socket.resetAndDestroy()` (node:net, `uv_tcp_close_reset`: SO_LINGER
 * {on, 0} then close) does send a real RST at any moment, so the client sees
 * `ECONNRESET` (Deno's `ConnectionReset`) — which the tests assert, proving
 * the reset is genuine.
 *
 * The connection object has the same shape as the unix fake server's
 * `FakeConn`, plus `reset()`, so fault scripts work on both.
 *
 * @module
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import type { FakeConn } from "../helpers/fake_server.ts";
import { nowTimestamp, qemuGreeting } from "../helpers/fake_server.ts";
import { JsonObjectFramer } from "../../lib/framing.ts";

/** A {@link FakeConn} that can also reset the connection (RST). */
export interface ResettableConn extends FakeConn {
  /** Aborts the connection with a TCP RST (SO_LINGER 0 + close). */
  reset(): void;
}

/** A running TCP fake server. */
export interface TcpFakeServer extends AsyncDisposable {
  /** `tcp:127.0.0.1:PORT`. */
  address: string;
}

/** Starts a TCP fake server that runs `script` for each connection. */
export async function startTcpResetServer(
  script: (conn: ResettableConn) => Promise<void>,
): Promise<TcpFakeServer> {
  const tasks: Promise<void>[] = [];
  const sockets = new Set<net.Socket>();
  const errors: unknown[] = [];
  let disposing = false;
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    const conn = wrap(sock);
    tasks.push(
      script(conn).catch((e) => {
        if (!disposing) errors.push(e);
      }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `tcp:127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      disposing = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await Promise.all(tasks);
      await closed;
      // Let node:net's internal close callbacks run before the sanitizers look.
      await new Promise((r) => setTimeout(r, 10));
      if (errors.length > 0) throw errors[0];
    },
  };
}

function wrap(sock: net.Socket): ResettableConn {
  const queue: Record<string, unknown>[] = [];
  let waiter: ((m: Record<string, unknown> | Error) => void) | undefined;
  const framer = new JsonObjectFramer();
  let ended = false;
  let eofResolve!: () => void;
  const eof = new Promise<void>((r) => (eofResolve = r));
  const finish = () => {
    if (ended) return;
    ended = true;
    eofResolve();
    const w = waiter;
    waiter = undefined;
    w?.(new Error("tcp fake server: connection ended"));
  };
  sock.on("data", (chunk: Buffer) => {
    let messages: Record<string, unknown>[];
    try {
      messages = framer.push(new Uint8Array(chunk));
    } catch {
      return finish(); // the client sent something that is not QMP: stop listening
    }
    for (const msg of messages) {
      const w = waiter;
      waiter = undefined;
      if (w) w(msg);
      else queue.push(msg);
    }
  });
  sock.on("end", finish);
  sock.on("close", finish);
  sock.on("error", finish);

  const write = (data: string | Uint8Array) =>
    new Promise<void>((resolve, reject) => {
      if (sock.destroyed) return reject(new Error("tcp fake server: socket destroyed"));
      sock.write(typeof data === "string" ? data : Buffer.from(data), (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  const send = (msg: unknown) => write(JSON.stringify(msg) + "\r\n");
  const conn: ResettableConn = {
    write,
    send,
    greet: (caps) => send(qemuGreeting(caps)),
    async handshake(caps) {
      await send(qemuGreeting(caps));
      const req = await conn.recv();
      await conn.reply(req, {});
      return req;
    },
    recv(timeoutMs = 5000) {
      if (queue.length > 0) return Promise.resolve(queue.shift()!);
      if (ended) return Promise.reject(new Error("tcp fake server: connection ended"));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          reject(new Error(`tcp fake server: nothing received within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter = (m) => {
          clearTimeout(timer);
          if (m instanceof Error) reject(m);
          else resolve(m);
        };
      });
    },
    reply: (req, value = {}) => send({ return: value, id: req.id }),
    event: (name, data) =>
      send(
        data === undefined
          ? { event: name, timestamp: nowTimestamp() }
          : { event: name, data, timestamp: nowTimestamp() },
      ),
    eof,
    close() {
      sock.destroy();
    },
    reset() {
      sock.resetAndDestroy();
    },
  };
  return conn;
}
