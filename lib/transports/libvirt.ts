/**
 * libvirt transports: QMP and the guest agent of a libvirt-managed domain,
 * spoken as bytes so the ordinary clients run over them unchanged.
 *
 * libvirt owns the domain's QMP monitor; it passes commands through
 * (`virDomainQemuMonitorCommand`) and events out
 * (`virConnectDomainQemuMonitorEventRegister`). {@link LibvirtQmpTransport}
 * turns that back into a QMP stream:
 *
 * - a greeting synthesized from `query-version` (capabilities `[]`: libvirt
 *   negotiated the session itself, and out-of-band execution is not available);
 * - `qmp_capabilities` answered locally;
 * - each command sent without its `id` (libvirt uses its own ids), one at a
 *   time in the order written, its reply given back with the client's `id`;
 * - each QEMU event as a QMP event message with QEMU's timestamp.
 *
 * Ordering: events reach us from libvirt's event loop, not the monitor socket,
 * so an event caused by a command may arrive just after that command's reply
 * (never before the command was sent). `waitEvent` armed before the command,
 * and `waitEvent(..., { since: mark() })`, still see it.
 *
 * When the domain stops (libvirt's lifecycle event), the stream ends like a
 * closed QMP socket. A command that fails inside libvirt gets a QMP error reply
 * (`GenericError`, desc `libvirt: …`), or, when the domain is gone, ends the
 * stream with a {@link LibvirtError}.
 *
 * @module
 */
import type { LibvirtAddress } from "../address.ts";
import { formatAddress } from "../address.ts";
import { AbortError, TimeoutError } from "../errors.ts";
import { JsonObjectFramer } from "../framing.ts";
import { parseJson, stringifyJson } from "../json.ts";
import {
  LibvirtConnection,
  LibvirtError,
  type LibvirtMonitorEvent,
  type LibvirtOpenOptions,
  VIR_ERR,
} from "../libvirt_ffi.ts";
import type { Transport } from "../transport.ts";
import { AGENT_NO_REPLY_COMMANDS } from "../qapi/agent_types.ts";

/** Options of {@link openLibvirt}. */
export interface LibvirtTransportOptions {
  /** Absolute deadline (ms since epoch). */
  deadline: number;
  /** The timeout the deadline came from, for messages. */
  timeoutMs: number;
  /** Cancels opening. */
  signal?: AbortSignal;
  /** Retry while the domain does not exist or is not running yet, until the deadline. */
  retry?: boolean;
}

const encoder = new TextEncoder();
/** libvirt's timeout of the `guest-ping` that stands in for a sync, in seconds. */
const SYNC_PING_SECONDS = 2;
/** libvirt's wait for a reply to a command that sends none when it works, in seconds. */
const NO_REPLY_WAIT_SECONDS = 5;
/** How long `close()` waits for a command still in libvirt before ending the stream. */
const CLOSE_WAIT_MS = 5000;
/** How long a failed command waits for the domain's STOPPED lifecycle event. */
const GONE_WAIT_MS = 1000;

/** Bytes queued for `read()`, then end of stream or an error. */
class ByteQueue {
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: unknown;
  #waiter: (() => void) | undefined;

  push(text: string, prefix?: number): void {
    if (this.#ended) return;
    const bytes = encoder.encode(text + "\r\n");
    this.#chunks.push(prefix === undefined ? bytes : new Uint8Array([prefix, ...bytes]));
    this.#wake();
  }

  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#ended) {
        if (this.#error !== undefined) {
          const e = this.#error;
          this.#error = undefined;
          throw e;
        }
        return null;
      }
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
    const head = this.#chunks[0];
    const n = Math.min(p.length, head.length);
    p.set(head.subarray(0, n));
    if (n === head.length) this.#chunks.shift();
    else this.#chunks[0] = head.subarray(n);
    return n;
  }
}

/**
 * Closes the libvirt connection once the command in flight returns (libvirt may still
 * use the domain until then), and ends the reader: at once when everything is released,
 * else after {@link CLOSE_WAIT_MS} (a command stuck in libvirt; the connection is closed
 * when it returns).
 */
async function release(
  inFlight: Promise<void>,
  closeConn: () => Promise<void> | undefined,
  out: ByteQueue,
): Promise<void> {
  const done = inFlight.then(closeConn).catch(() => undefined);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([done, new Promise((r) => timer = setTimeout(r, CLOSE_WAIT_MS))]);
  clearTimeout(timer);
  out.end();
}

/** Opens a libvirt connection within the deadline; a late success is closed. */
async function openConnection(
  address: LibvirtAddress,
  options: LibvirtTransportOptions,
  callbacks: Pick<LibvirtOpenOptions, "onEvent" | "onStopped" | "onClosed">,
): Promise<LibvirtConnection> {
  const where = formatAddress(address);
  let delay = 50;
  while (true) {
    if (options.signal?.aborted) throw new AbortError(`Connecting to ${where}`);
    const remaining = options.deadline - Date.now();
    if (remaining <= 0) throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs);
    const pending = LibvirtConnection.open({
      uri: address.uri,
      domain: address.domain,
      ...callbacks,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const gaveUp = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError(`Connecting to ${where}`, options.timeoutMs)),
        remaining,
      );
      onAbort = () => reject(new AbortError(`Connecting to ${where}`));
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([pending, gaveUp]);
    } catch (err) {
      if (err instanceof TimeoutError || err instanceof AbortError) {
        pending.then((c) => c.close(), () => {});
        throw err;
      }
      const waitable = err instanceof LibvirtError &&
        (err.code === VIR_ERR.NO_DOMAIN || err.code === VIR_ERR.OPERATION_INVALID);
      if (options.retry && waitable && options.deadline - Date.now() > delay) {
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 500);
        continue;
      }
      throw err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort!);
      gaveUp.catch(() => {});
    }
  }
}

/**
 * A QMP byte stream over libvirt's QMP passthrough (see the module doc).
 * Open it with {@link openLibvirt}; `connect("libvirt:DOMAIN")` does.
 */
export class LibvirtQmpTransport implements Transport {
  #conn: LibvirtConnection | undefined;
  #out = new ByteQueue();
  #framer = new JsonObjectFramer();
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #closing: Promise<void> | undefined;
  #stopped = false;
  /** Events that arrive before the greeting is queued wait here: the greeting comes first. */
  #early: string[] | undefined = [];
  #onStop: (() => void) | undefined;

  /** Use {@link openLibvirt}. */
  private constructor() {}

  /** Opens the connection, fetches `query-version` and queues the greeting. */
  static async open(
    address: LibvirtAddress,
    options: LibvirtTransportOptions,
  ): Promise<LibvirtQmpTransport> {
    const t = new LibvirtQmpTransport();
    const conn = await openConnection(address, options, {
      onEvent: (e) => t.#event(e),
      onStopped: () => t.#onStopped(),
      onClosed: (reason) =>
        t.#out.end(
          new LibvirtError(
            `The libvirt connection to ${formatAddress(address)} closed`,
            `connection closed by ${reason}`,
          ),
        ),
    });
    t.#conn = conn;
    try {
      const reply = parseJson(await conn.monitorCommand('{"execute":"query-version"}'));
      if (!reply || typeof reply !== "object" || !("return" in reply)) {
        throw new LibvirtError(
          `Domain ${address.domain}`,
          `query-version failed: ${stringifyJson(reply?.error ?? reply)}`,
        );
      }
      t.#out.push(stringifyJson({ QMP: { version: reply.return, capabilities: [] } }));
      for (const e of t.#early ?? []) t.#out.push(e);
      t.#early = undefined;
    } catch (err) {
      await conn.close();
      throw err;
    }
    return t;
  }

  /** Reads QMP bytes: the greeting, replies and events. */
  read(p: Uint8Array): Promise<number | null> {
    return this.#out.read(p);
  }

  /** Takes QMP commands; each runs through libvirt once complete. */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BrokenPipe("transport closed"));
    const messages = this.#framer.push(p);
    if (this.#framer.failure) return Promise.reject(this.#framer.failure);
    for (const m of messages) {
      this.#chain = this.#chain.then(() => this.#command(m));
    }
    return Promise.resolve(p.length);
  }

  /** Ends the stream; pending reads end once libvirt's resources are released. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = release(this.#chain, () => this.#conn?.close(), this.#out);
  }

  /** Resolves when `close()` has released everything (libvirt connection, event loop). */
  closed(): Promise<void> {
    return this.#closing ?? Promise.resolve();
  }

  #event(e: LibvirtMonitorEvent): void {
    let data: unknown;
    try {
      data = e.details === null ? undefined : parseJson(e.details);
    } catch {
      data = e.details;
    }
    const message: Record<string, unknown> = { event: e.event };
    if (data !== undefined) message.data = data;
    message.timestamp = { seconds: e.seconds, microseconds: e.micros };
    if (this.#early) this.#early.push(stringifyJson(message));
    else this.#out.push(stringifyJson(message));
  }

  #onStopped(): void {
    this.#stopped = true;
    this.#onStop?.();
    // Let the command in flight (e.g. quit) deliver its reply first.
    this.#chain = this.#chain.then(() => this.#out.end());
  }

  /**
   * After a failed libvirt call: did the domain stop? libvirt reports a dying QEMU's
   * monitor error ("Unable to read from monitor") before its lifecycle event, so wait
   * for that event up to {@link GONE_WAIT_MS} before deciding.
   */
  async #domainGone(): Promise<boolean> {
    if (this.#stopped) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#onStop = resolve;
      timer = setTimeout(resolve, GONE_WAIT_MS);
    });
    clearTimeout(timer);
    this.#onStop = undefined;
    return this.#stopped || !(await this.#conn!.isActive().catch(() => false));
  }

  async #command(m: Record<string, unknown>): Promise<void> {
    if (this.#closed) return;
    const hasId = "id" in m;
    const id = m.id;
    const reply = (body: Record<string, unknown>) => {
      if (hasId) body.id = id;
      this.#out.push(stringifyJson(body));
    };
    if (typeof m["exec-oob"] === "string") {
      return reply({
        error: {
          class: "GenericError",
          desc: "out-of-band execution (exec-oob) is not available through libvirt",
        },
      });
    }
    if (m.execute === "qmp_capabilities") return reply({ return: {} });
    const { id: _drop, ...command } = m;
    let text: string;
    try {
      text = await this.#conn!.monitorCommand(stringifyJson(command));
    } catch (err) {
      if (this.#closed) return;
      // QEMU answers quit and exits at once; libvirt often loses the reply in the race
      // and reports the monitor's end instead. The stream ends with the STOPPED event.
      if (command.execute === "quit" && err instanceof LibvirtError) return reply({ return: {} });
      if (await this.#domainGone()) {
        this.#out.end(err);
        return;
      }
      const desc = err instanceof LibvirtError ? `libvirt: ${err.libvirtMessage}` : String(err);
      return reply({ error: { class: "GenericError", desc } });
    }
    let parsed: Record<string, unknown>;
    try {
      parsed = parseJson(text);
    } catch {
      return reply({
        error: {
          class: "GenericError",
          desc: `libvirt returned a reply that is not JSON: ${text}`,
        },
      });
    }
    delete parsed.id;
    reply(parsed);
  }
}

/**
 * A guest agent byte stream over `virDomainQemuAgentCommand`: libvirt owns the
 * agent channel and synchronises it itself, so `guest-sync`/`guest-sync-delimited`
 * are answered with a `guest-ping` through libvirt (no answer while the agent is not
 * connected, so the client's sync times out as with a silent agent) and the 0xFF resync
 * byte is dropped. Commands run one at
 * a time; each is bounded by libvirt's agent timeout (`agentTimeoutSeconds`,
 * default 60) as well as the client's own.
 */
export class LibvirtAgentTransport implements Transport {
  #conn: LibvirtConnection;
  #out = new ByteQueue();
  #framer = new JsonObjectFramer();
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #agentTimeout: number;

  private constructor(conn: LibvirtConnection, agentTimeoutSeconds: number) {
    this.#conn = conn;
    this.#agentTimeout = agentTimeoutSeconds;
  }

  /** Opens a libvirt connection to the domain for its guest agent. */
  static async open(
    address: LibvirtAddress,
    options: LibvirtTransportOptions & { agentTimeoutSeconds?: number },
  ): Promise<LibvirtAgentTransport> {
    const conn = await openConnection(address, options, {});
    return new LibvirtAgentTransport(conn, options.agentTimeoutSeconds ?? 60);
  }

  /** Reads agent replies. */
  read(p: Uint8Array): Promise<number | null> {
    return this.#out.read(p);
  }

  /** Takes agent commands (0xFF bytes are dropped). */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BrokenPipe("transport closed"));
    const bytes = p.includes(0xff) ? p.filter((b) => b !== 0xff) : p;
    const messages = this.#framer.push(bytes);
    if (this.#framer.failure) return Promise.reject(this.#framer.failure);
    for (const m of messages) this.#chain = this.#chain.then(() => this.#command(m));
    return Promise.resolve(p.length);
  }

  /** Ends the stream; pending reads end once the libvirt connection is closed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void release(this.#chain, () => this.#conn.close(), this.#out);
  }

  async #command(m: Record<string, unknown>): Promise<void> {
    if (this.#closed) return;
    const args = m.arguments as Record<string, unknown> | undefined;
    if (m.execute === "guest-sync-delimited" || m.execute === "guest-sync") {
      // libvirt synchronises the channel itself; answer when the agent answers a ping, and
      // say nothing when it does not (not connected yet): the client's sync then times out
      // and `waitReady` tries again, as with a silent agent on a socket.
      try {
        await this.#conn.agentCommand('{"execute":"guest-ping"}', SYNC_PING_SECONDS);
      } catch {
        return;
      }
      if (this.#closed) return;
      const delimiter = m.execute === "guest-sync-delimited" ? 0xff : undefined;
      this.#out.push(stringifyJson({ return: args?.id }), delimiter);
      return;
    }
    // guest-shutdown and guest-suspend-* do not reply when they work, and libvirt then
    // reports the agent gone (or its timeout): say nothing, as the agent would.
    const noReply = (AGENT_NO_REPLY_COMMANDS as readonly unknown[]).includes(m.execute);
    let text: string;
    try {
      text = await this.#conn.agentCommand(
        stringifyJson(m),
        noReply ? NO_REPLY_WAIT_SECONDS : this.#agentTimeout,
      );
    } catch (err) {
      if (this.#closed || noReply) return;
      const desc = err instanceof LibvirtError ? `libvirt: ${err.libvirtMessage}` : String(err);
      this.#out.push(stringifyJson({ error: { class: "GenericError", desc } }));
      return;
    }
    if (text.trim() !== "") this.#out.push(text);
  }
}

/** Opens a QMP transport to a libvirt domain (used by `openTransport`). */
export function openLibvirt(
  address: LibvirtAddress,
  options: LibvirtTransportOptions,
): Promise<LibvirtQmpTransport> {
  return LibvirtQmpTransport.open(address, options);
}
