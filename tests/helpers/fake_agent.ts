/**
 * A scriptable fake guest agent (QGA) on a unix socket, for faults the real qemu-ga does not
 * produce on demand: garbage and stale replies, silence, a restart mid-command, huge outputs,
 * a process that never exits, and the commands never to run against the host (fsfreeze, shutdown).
 *
 * @module
 */
import { JsonObjectFramer } from "../../lib/framing.ts";

const encoder = new TextEncoder();

/** A request the client sent. */
export interface AgentRequest {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** The server side of one connection. */
export interface FakeAgentConn {
  /** Writes raw bytes or text. */
  write(data: string | Uint8Array): Promise<void>;
  /** Writes `JSON.stringify(msg)` and a newline, like qemu-ga. */
  send(msg: unknown): Promise<void>;
  /** Next request; rejects on EOF or after `timeoutMs` (default 5 s). */
  recv(timeoutMs?: number): Promise<AgentRequest>;
  /** Answers a `guest-sync-delimited` request like qemu-ga: 0xFF, then `{"return": id}`. */
  syncReply(request: AgentRequest): Promise<void>;
  /** 0xFF bytes received from the client so far (parser resets). */
  readonly delimitersReceived: number;
  /** Every request received, in order. */
  readonly requests: AgentRequest[];
  /** Closes the connection; idempotent. */
  close(): void;
}

/** A handler's answer: a `return` value, an error, silence, or a closed connection. */
export type FakeAnswer =
  | { return: unknown }
  | { error: { class: string; desc: string } }
  | "silent"
  | "close";

/** Answers a request (guest-sync-delimited is answered by {@link serveAgent} itself). */
export type FakeHandler = (
  request: AgentRequest,
  conn: FakeAgentConn,
) => FakeAnswer | Promise<FakeAnswer>;

/** A running fake agent. */
export interface FakeAgent extends AsyncDisposable {
  /** `unix:<tmpdir>/qga.sock`. */
  address: string;
  /** The socket path. */
  path: string;
  /** Connections accepted so far. */
  readonly connections: FakeAgentConn[];
}

/**
 * Starts a fake agent; each connection runs `script` (default: {@link serveAgent} with
 * `handler`). Disposal closes everything and rethrows a script's error.
 */
export async function startFakeAgent(
  handlerOrScript: FakeHandler | { script: (conn: FakeAgentConn) => Promise<void> },
): Promise<FakeAgent> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-fake-agent-" });
  const path = `${dir}/qga.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const connections: FakeAgentConn[] = [];
  const scripts: Promise<void>[] = [];
  const readers: Promise<void>[] = [];
  let firstError: unknown;
  let disposing = false;
  const script = typeof handlerOrScript === "function"
    ? (c: FakeAgentConn) => serveAgent(c, handlerOrScript)
    : handlerOrScript.script;
  const accepting = (async () => {
    for await (const conn of listener) {
      const { fc, reading } = wrap(conn);
      readers.push(reading);
      connections.push(fc);
      scripts.push(
        script(fc).catch((e) => {
          if (!disposing && !(e instanceof FakeAgentEof)) firstError ??= e;
        }).finally(() => fc.close()),
      );
    }
  })().catch(() => {});
  return {
    address: `unix:${path}`,
    path,
    connections,
    async [Symbol.asyncDispose]() {
      disposing = true;
      listener.close();
      for (const c of connections) c.close();
      await accepting;
      await Promise.all(scripts);
      await Promise.all(readers);
      await Deno.remove(dir, { recursive: true });
      if (firstError) throw firstError;
    },
  };
}

/** Thrown by `recv` when the client closed the connection. */
export class FakeAgentEof extends Error {
  constructor() {
    super("client closed the connection");
  }
}

/** The default script: answers sync itself, everything else with `handler`, until EOF. */
export async function serveAgent(conn: FakeAgentConn, handler: FakeHandler): Promise<void> {
  while (true) {
    let req: AgentRequest;
    try {
      req = await conn.recv(60_000);
    } catch (e) {
      if (e instanceof FakeAgentEof) return;
      throw e;
    }
    if (req.execute === "guest-sync-delimited") {
      await conn.syncReply(req);
      continue;
    }
    const answer = await handler(req, conn);
    if (answer === "silent") continue;
    if (answer === "close") {
      conn.close();
      return;
    }
    await conn.send(answer);
  }
}

function wrap(conn: Deno.Conn): { fc: FakeAgentConn; reading: Promise<void> } {
  let framer = new JsonObjectFramer();
  const queue: AgentRequest[] = [];
  const requests: AgentRequest[] = [];
  let wake: (() => void) | undefined;
  let eof = false;
  let closed = false;
  let delimiters = 0;
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        let start = 0;
        const chunk = buf.subarray(0, n);
        while (true) {
          const ff = chunk.indexOf(0xff, start);
          const part = chunk.subarray(start, ff < 0 ? chunk.length : ff);
          if (part.length) {
            for (const m of framer.push(part)) {
              requests.push(m as unknown as AgentRequest);
              queue.push(m as unknown as AgentRequest);
            }
          }
          if (ff < 0) break;
          delimiters++;
          framer = new JsonObjectFramer();
          start = ff + 1;
        }
        wake?.();
      }
    } catch {
      // closed
    }
    eof = true;
    wake?.();
  })();
  const fc: FakeAgentConn = {
    async write(data) {
      let bytes = typeof data === "string" ? encoder.encode(data) : data;
      while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
    },
    send(msg) {
      return fc.write(JSON.stringify(msg) + "\n");
    },
    recv(timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          wake = undefined;
          reject(new Error(`fake agent: no request within ${timeoutMs} ms`));
        }, timeoutMs);
        const check = () => {
          const r = queue.shift();
          if (r) resolve(r);
          else if (eof) reject(new FakeAgentEof());
          else return void (wake = check);
          wake = undefined;
          clearTimeout(timer);
        };
        check();
      });
    },
    async syncReply(req) {
      const json = encoder.encode(JSON.stringify({ return: req.arguments?.id }) + "\n");
      const bytes = new Uint8Array(json.length + 1);
      bytes[0] = 0xff;
      bytes.set(json, 1);
      await fc.write(bytes);
    },
    get delimitersReceived() {
      return delimiters;
    },
    requests,
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
  return { fc, reading };
}
