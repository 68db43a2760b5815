/**
 * The guest agent channel of a launched VM (`launch({ agent: true })`): the QEMU arguments of a
 * virtio-serial port named `org.qemu.guest_agent.0` on a private unix socket, an
 * {@link AgentClient} that connects to it on first use, and the watch on QEMU's
 * `VSERPORT_CHANGE` events that tells the client when `qemu-ga` closes the port in the guest
 * (it died, was OOM-killed or stopped) so that a pending command fails at once instead of
 * waiting for a reply that will never come.
 *
 * @module
 */
import type { QmpClient } from "./client.ts";
import { AgentClient } from "./agent/client.ts";
import { ConnectionError } from "./errors.ts";
import type { Transport } from "./transport.ts";

/** The port name `qemu-ga` looks for (QEMU's and libvirt's convention). */
export const AGENT_PORT_NAME = "org.qemu.guest_agent.0";
/** The id of the agent's chardev and virtserialport device (`VSERPORT_CHANGE` reports it). */
export const AGENT_DEVICE_ID = "qga0";
/**
 * Memory given to a VM launched with `agent: true` when none is asked for, in MiB. qemu-ga keeps
 * up to 16 MiB of a command's output (twice, raw and base64) and is OOM-killed in a 128 MiB tiny
 * guest when a command prints 20 MB; at 256 MiB it survives and reports the output truncated.
 */
export const AGENT_DEFAULT_MEMORY_MIB = 256;

/** QEMU arguments of the agent channel on `socketPath`. */
export function agentArgs(socketPath: string): string[] {
  return [
    "-device",
    "virtio-serial",
    "-chardev",
    `socket,id=${AGENT_DEVICE_ID},path=${socketPath},server=on,wait=off`,
    "-device",
    `virtserialport,chardev=${AGENT_DEVICE_ID},name=${AGENT_PORT_NAME},id=${AGENT_DEVICE_ID}`,
  ];
}

/**
 * A unix socket transport that connects when first read or written. A connection that fails
 * ends reads (the client reports a closed connection) and fails writes with a
 * {@link ConnectionError}.
 */
class LazyUnixTransport implements Transport {
  readonly #path: string;
  #conn: Promise<Deno.UnixConn> | undefined;
  #closed = false;

  constructor(path: string) {
    this.#path = path;
  }

  #open(): Promise<Deno.UnixConn> {
    this.#conn ??= (async () => {
      if (this.#closed) throw new ConnectionError(`The agent socket ${this.#path} is closed`);
      let conn: Deno.UnixConn;
      try {
        conn = await Deno.connect({ transport: "unix", path: this.#path });
      } catch (cause) {
        throw new ConnectionError(
          `Cannot connect to the guest agent socket ${this.#path}: ` +
            `${cause instanceof Error ? cause.message : cause} (has the VM exited?)`,
          { cause, address: `unix:${this.#path}` },
        );
      }
      if (this.#closed) {
        conn.close();
        throw new ConnectionError(`The agent socket ${this.#path} is closed`);
      }
      return conn;
    })();
    return this.#conn;
  }

  async read(p: Uint8Array): Promise<number | null> {
    const conn = await this.#open();
    try {
      const n = await conn.read(p);
      if (n === null) this.close(); // QEMU went away: release the socket now
      return n;
    } catch (err) {
      this.close();
      throw err;
    }
  }

  async write(p: Uint8Array): Promise<number> {
    const conn = await this.#open();
    return await conn.write(p);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn?.then((c) => {
      try {
        c.close();
      } catch { /* already closed */ }
    }, () => {});
  }
}

/** The agent side of a {@link Machine}: created by `launch()` when `agent: true`. */
export class AgentChannel {
  /** Path of the unix socket of the agent's chardev. */
  readonly socketPath: string;
  #client: AgentClient | undefined;
  #closed = false;
  /** Whether qemu-ga has the port open in the guest (`VSERPORT_CHANGE`). */
  #portOpen = false;
  #lastClose: string | undefined;

  constructor(socketPath: string, qmp: QmpClient) {
    this.socketPath = socketPath;
    const events = qmp.events({
      names: ["VSERPORT_CHANGE"],
      where: { id: AGENT_DEVICE_ID },
      overflow: "drop-oldest",
    });
    void (async () => {
      try {
        for await (const event of events) this.#portChanged(event.data.open);
      } catch { /* the QMP connection ended: so did the VM */ }
    })();
  }

  /** True while `qemu-ga` holds its port open in the guest. */
  get portOpen(): boolean {
    return this.#portOpen;
  }

  /** The client, created (and its socket connected) on first use. */
  get client(): AgentClient {
    if (!this.#client) {
      this.#client = new AgentClient(new LazyUnixTransport(this.socketPath), {
        where: `unix:${this.socketPath}`,
      });
      if (this.#closed) void this.#client.close();
      else this.#tellClosed(); // created after qemu-ga died: it has to know
    }
    return this.#client;
  }

  #portChanged(open: boolean): void {
    const was = this.#portOpen;
    this.#portOpen = open;
    if (was && !open) {
      this.#lastClose = new Date().toISOString();
      this.#tellClosed();
    } else if (!was && open) {
      this.#lastClose = undefined;
      this.#client?.portOpened();
    }
  }

  #tellClosed(): void {
    if (this.#lastClose === undefined) return;
    this.#client?.portClosed(
      `qemu-ga closed its port in the guest at ${this.#lastClose} (QEMU reported ` +
        "VSERPORT_CHANGE open=false): it died, was OOM-killed or was stopped",
    );
  }

  /** Closes the client (pending calls reject). The event watch ends with the QMP connection. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#client?.close();
  }
}
