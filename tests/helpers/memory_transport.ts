/**
 * An in-memory transport pair for unit tests of the client: no sockets, no
 * permissions. The test plays QEMU through {@link FakePeer}.
 */
import type { Transport } from "../../lib/transport.ts";
import { type ClientOptions, QmpClient } from "../../lib/client.ts";
import { JsonObjectFramer } from "../../lib/framing.ts";

/** A one-way byte pipe with a blocking read. */
class Pipe {
  #chunks: Uint8Array[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #error: Error | undefined;

  push(bytes: Uint8Array): void {
    if (this.#ended) throw new Error("pipe closed");
    this.#chunks.push(bytes.slice());
    this.#wake();
  }

  end(error?: Error): void {
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }

  get ended(): boolean {
    return this.#ended;
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#ended) {
        if (this.#error) throw this.#error;
        return null;
      }
      await new Promise<void>((r) => (this.#waiter = r));
    }
    const head = this.#chunks[0];
    const n = Math.min(head.length, p.length);
    p.set(head.subarray(0, n));
    if (n === head.length) this.#chunks.shift();
    else this.#chunks[0] = head.subarray(n);
    return n;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

const enc = new TextEncoder();

/** The server side of a memory pair: send bytes/messages, receive the client's messages. */
export class FakePeer {
  readonly #toClient: Pipe;
  readonly #fromClient: Pipe;
  readonly #framer = new JsonObjectFramer();
  readonly #inbox: Record<string, unknown>[] = [];
  #inboxWaiter: (() => void) | undefined;
  #pump: Promise<void>;

  constructor(toClient: Pipe, fromClient: Pipe) {
    this.#toClient = toClient;
    this.#fromClient = fromClient;
    this.#pump = this.#run();
  }

  async #run(): Promise<void> {
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await this.#fromClient.read(buf);
      if (n === null) break;
      this.#inbox.push(...this.#framer.push(buf.subarray(0, n)));
      const w = this.#inboxWaiter;
      this.#inboxWaiter = undefined;
      w?.();
    }
  }

  /** Sends raw text or a message object (with CRLF, as QEMU does). */
  send(msg: string | Record<string, unknown>): void {
    const text = typeof msg === "string" ? msg : JSON.stringify(msg) + "\r\n";
    if (!this.#toClient.ended) this.#toClient.push(enc.encode(text));
  }

  /** Sends QEMU 7.2's greeting. */
  greet(capabilities: string[] = ["oob"]): void {
    this.send({
      QMP: {
        version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "test" },
        capabilities,
      },
    });
  }

  /** Sends an event with a current timestamp. */
  event(name: string, data?: unknown): void {
    const now = Date.now();
    const msg: Record<string, unknown> = {
      event: name,
      timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 },
    };
    if (data !== undefined) msg.data = data;
    this.send(msg);
  }

  /** Waits for the next message the client sent. */
  async recv(): Promise<Record<string, unknown>> {
    while (this.#inbox.length === 0) {
      if (this.#fromClient.ended) throw new Error("client closed before sending");
      await new Promise<void>((r) => (this.#inboxWaiter = r));
    }
    return this.#inbox.shift()!;
  }

  /** Number of received, unread client messages. */
  get unread(): number {
    return this.#inbox.length;
  }

  /** Replies `{return}` to a received command. */
  reply(cmd: Record<string, unknown>, value: unknown = {}): void {
    this.send({ return: value, id: cmd.id });
  }

  /** Receives `qmp_capabilities` and acknowledges it. */
  async acceptNegotiation(): Promise<Record<string, unknown>> {
    const cmd = await this.recv();
    if (cmd.execute !== "qmp_capabilities") throw new Error(`expected qmp_capabilities`);
    this.reply(cmd);
    return cmd;
  }

  /** Ends the stream to the client (EOF), or fails its reads with `error`. */
  close(error?: Error): void {
    if (!this.#toClient.ended) this.#toClient.end(error);
  }

  /** Waits until the client closed its side and the pump finished. */
  async done(): Promise<void> {
    await this.#pump;
  }
}

/** Creates a connected pair: a {@link Transport} for the client and a {@link FakePeer}. */
export function memoryPair(): { transport: Transport; peer: FakePeer } {
  const toClient = new Pipe();
  const fromClient = new Pipe();
  const transport: Transport = {
    read: (p) => toClient.read(p),
    write: (p) => {
      if (fromClient.ended) return Promise.reject(new Error("broken pipe"));
      fromClient.push(p);
      return Promise.resolve(p.length);
    },
    close: () => {
      if (!toClient.ended) toClient.end();
      if (!fromClient.ended) fromClient.end();
    },
  };
  return { transport, peer: new FakePeer(toClient, fromClient) };
}

/** A client on a {@link memoryPair}, greeted and negotiated: the peer plays QEMU. */
export async function openMemoryClient(
  options: ClientOptions = {},
): Promise<{ client: QmpClient; peer: FakePeer }> {
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport, { address: "mem", ...options });
  peer.greet();
  const handshake = client.handshake({ timeout: "2s" });
  await peer.acceptNegotiation();
  await handshake;
  return { client, peer };
}
