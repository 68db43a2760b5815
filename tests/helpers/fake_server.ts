/**
 * A tiny scriptable QMP server on a unix socket, for faults real QEMU does
 * not produce (garbage, truncation, floods, slow drips, ...).
 *
 * Each accepted connection runs the test's `script` with a {@link FakeConn}.
 * Disposing the server closes the listener and every connection, waits for
 * the scripts, removes the temp dir, and rethrows the first error a script
 * raised before disposal began (so a broken script fails its test).
 *
 * @module
 */
import { JsonObjectFramer } from "../../lib/framing.ts";

const encoder = new TextEncoder();

/** The server side of one client connection. */
export interface FakeConn {
  /** Writes raw bytes or text, all of it. */
  write(data: string | Uint8Array): Promise<void>;
  /** Writes `JSON.stringify(msg)` followed by CRLF, like QEMU. */
  send(msg: unknown): Promise<void>;
  /** Sends a QEMU 7.2-like greeting. */
  greet(capabilities?: string[]): Promise<void>;
  /** Greets, reads `qmp_capabilities` and accepts it. Returns that request. */
  handshake(capabilities?: string[]): Promise<Record<string, unknown>>;
  /** Next JSON object the client sent; rejects on EOF or after `timeoutMs` (default 5 s). */
  recv(timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends `{"return": value, "id": request.id}`. */
  reply(request: Record<string, unknown>, value?: unknown): Promise<void>;
  /** Sends an event with a current timestamp (`data` omitted when undefined). */
  event(name: string, data?: unknown): Promise<void>;
  /** Resolves when the client closed its side (or the connection was closed). */
  eof: Promise<void>;
  /** Closes the connection; idempotent. */
  close(): void;
}

/** A running fake server; see the module docs. */
export interface FakeServer extends AsyncDisposable {
  /** `unix:<tmpdir>/qmp.sock`, for `connect()`. */
  address: string;
  /** The socket path. */
  path: string;
  /** Number of connections accepted so far. */
  readonly accepted: number;
  /** Resolves when the first connection's script has returned (or failed). */
  firstScriptDone: Promise<void>;
}

/** Error thrown by {@link FakeConn.recv} when the client closed the connection. */
export class FakeEof extends Error {
  constructor() {
    super("fake server: the client closed the connection");
    this.name = "FakeEof";
  }
}

/** The greeting real QEMU 7.2 sends. */
export function qemuGreeting(capabilities: string[] = ["oob"]): Record<string, unknown> {
  return {
    QMP: {
      version: {
        qemu: { micro: 22, minor: 2, major: 7 },
        package: "Debian 1:7.2+dfsg-7+deb12u18+b3",
      },
      capabilities,
    },
  };
}

/** A QMP event timestamp for now. */
export function nowTimestamp(): { seconds: number; microseconds: number } {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), microseconds: (ms % 1000) * 1000 };
}

/** Starts a fake server running `script` for every connection. */
export async function startFakeServer(
  script: (conn: FakeConn) => Promise<void>,
): Promise<FakeServer> {
  const tmpdir = await Deno.makeTempDir({ prefix: "qmpkit-fake-" });
  await Deno.chmod(tmpdir, 0o700);
  const path = `${tmpdir}/qmp.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const conns = new Set<ReturnType<typeof wrap>>();
  const tasks: Promise<void>[] = [];
  const errors: unknown[] = [];
  let disposing = false;
  let accepted = 0;
  let firstDone!: () => void;
  const firstScriptDone = new Promise<void>((r) => (firstDone = r));

  const acceptLoop = (async () => {
    while (true) {
      let raw: Deno.UnixConn;
      try {
        raw = await listener.accept();
      } catch {
        return; // listener closed
      }
      const conn = wrap(raw);
      conns.add(conn);
      const first = accepted++ === 0;
      tasks.push(
        (async () => {
          try {
            await script(conn.api);
          } catch (err) {
            if (!disposing) errors.push(err);
          } finally {
            if (first) firstDone();
          }
        })(),
      );
    }
  })();

  return {
    address: `unix:${path}`,
    path,
    get accepted() {
      return accepted;
    },
    firstScriptDone,
    async [Symbol.asyncDispose]() {
      disposing = true;
      listener.close();
      await acceptLoop;
      for (const c of conns) c.api.close();
      await Promise.all(tasks);
      await Promise.all([...conns].map((c) => c.reader));
      await Deno.remove(tmpdir, { recursive: true }).catch(() => {});
      if (errors.length > 0) throw errors[0];
    },
  };
}

function wrap(conn: Deno.UnixConn) {
  let closed = false;
  const queue: Record<string, unknown>[] = [];
  let waiter: { resolve(m: Record<string, unknown>): void; reject(e: unknown): void } | undefined;
  let ended = false;
  let endError: unknown;
  let eofResolve!: () => void;
  const eof = new Promise<void>((r) => (eofResolve = r));

  const finish = (err?: unknown) => {
    ended = true;
    endError = err;
    eofResolve();
    const w = waiter;
    waiter = undefined;
    w?.reject(err ?? new FakeEof());
  };

  const deliver = (msg: Record<string, unknown>) => {
    const w = waiter;
    waiter = undefined;
    if (w) w.resolve(msg);
    else queue.push(msg);
  };

  // Reads continuously and splits the client's JSON objects with the library's framer.
  const reader = (async () => {
    const buf = new Uint8Array(64 * 1024);
    const framer = new JsonObjectFramer();
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (const msg of framer.push(buf.subarray(0, n))) deliver(msg);
      }
      finish();
    } catch (err) {
      finish(closed ? undefined : err);
    }
  })();

  const write = async (data: string | Uint8Array) => {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await conn.write(bytes.subarray(off));
  };
  const send = (msg: unknown) => write(JSON.stringify(msg) + "\r\n");

  const api: FakeConn = {
    write,
    send,
    greet: (caps) => send(qemuGreeting(caps)),
    async handshake(caps) {
      await send(qemuGreeting(caps));
      const req = await api.recv();
      if (req.execute !== "qmp_capabilities") {
        throw new Error(`fake server: expected qmp_capabilities, got ${JSON.stringify(req)}`);
      }
      await api.reply(req, {});
      return req;
    },
    recv(timeoutMs = 5000) {
      if (queue.length > 0) return Promise.resolve(queue.shift()!);
      if (ended) return Promise.reject(endError ?? new FakeEof());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          reject(new Error(`fake server: nothing received within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter = {
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
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
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch { /* already closed */ }
    },
  };
  return { api, reader };
}
