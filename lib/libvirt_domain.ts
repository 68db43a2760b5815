/**
 * Transient libvirt domains started by qmpkit (a playbook's `vm: { libvirt: … }`):
 * defined and started from XML in one call, reached over libvirt's QMP and agent
 * passthrough, and destroyed when done. The domain is started with
 * `VIR_DOMAIN_START_AUTODESTROY`, so libvirtd destroys it when the connection that
 * created it closes: also when this process is killed.
 *
 * @module
 */
import { AgentClient } from "./agent/client.ts";
import { connect, type QmpClient } from "./client.ts";
import type { ClientOptions } from "./client.ts";
import { type Duration, parseDuration } from "./duration.ts";
import { ConnectionError, QmpError } from "./errors.ts";
import { LibvirtConnection } from "./libvirt_ffi.ts";
import type { Transport } from "./transport.ts";
import { LibvirtAgentTransport } from "./transports/libvirt.ts";

/** Options of a transient libvirt domain (`vm: { libvirt: … }` in a playbook). */
export interface LibvirtVmOptions {
  /** libvirt URI (default `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`). */
  uri?: string;
  /**
   * The domain XML. Without a `<name>`, a unique `qmpkit-…` name is added. A guest
   * agent needs `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`.
   */
  xml: string;
  /** Bound of starting the domain and connecting to its QMP (default `"30s"`). */
  timeout?: Duration;
}

/** Options of {@link startLibvirtDomain}. */
export interface StartLibvirtDomainOptions extends LibvirtVmOptions {
  /** Cancels starting (a domain already started is destroyed). */
  signal?: AbortSignal;
  /** Options of the QMP client. */
  qmp?: ClientOptions;
}

/** A transient domain started by {@link startLibvirtDomain}. */
export class LibvirtDomain implements AsyncDisposable {
  /** The domain's name. */
  readonly name: string;
  /** The libvirt URI. */
  readonly uri: string;
  /** Its qmpkit address, `libvirt+URI#NAME`. */
  readonly address: string;
  /** The QMP connection (through libvirt). */
  readonly qmp: QmpClient;
  readonly #conn: LibvirtConnection;
  #agent: AgentClient | undefined;
  #destroyed: Promise<void> | undefined;

  /** @internal Use {@link startLibvirtDomain}. */
  constructor(conn: LibvirtConnection, qmp: QmpClient) {
    this.#conn = conn;
    this.name = conn.domain;
    this.uri = conn.uri;
    this.address = `libvirt+${conn.uri}#${conn.domain}`;
    this.qmp = qmp;
  }

  /**
   * The guest agent, through libvirt (`virDomainQemuAgentCommand`); it connects on first
   * use. Wait for the guest to boot with `await dom.agent.waitReady({ timeout: "60s" })`.
   */
  get agent(): AgentClient {
    if (!this.#agent) {
      this.#agent = new AgentClient(new LazyAgentTransport(this.uri, this.name), {
        where: this.address,
      });
      if (this.#destroyed) void this.#agent.close();
    }
    return this.#agent;
  }

  /** True while the domain runs. */
  isActive(): Promise<boolean> {
    return this.#conn.isActive();
  }

  /** Closes QMP and the agent and destroys the domain (idempotent). */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      await this.#agent?.close();
      await this.qmp.close();
      try {
        await this.#conn.destroy();
      } finally {
        await this.#conn.close(); // autodestroy: closing alone would destroy it too
      }
    })();
    return this.#destroyed;
  }

  /** Destroys the domain (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }
}

/** Opens the libvirt agent transport on first read or write. */
class LazyAgentTransport implements Transport {
  #open: Promise<LibvirtAgentTransport> | undefined;
  #closed = false;
  readonly #uri: string;
  readonly #domain: string;

  constructor(uri: string, domain: string) {
    this.#uri = uri;
    this.#domain = domain;
  }

  #get(): Promise<LibvirtAgentTransport> {
    this.#open ??= (async () => {
      if (this.#closed) throw new ConnectionError(`The agent of ${this.#domain} is closed`);
      const t = await LibvirtAgentTransport.open(
        { transport: "libvirt", uri: this.#uri, domain: this.#domain },
        { deadline: Date.now() + 10_000, timeoutMs: 10_000 },
      );
      if (this.#closed) t.close();
      return t;
    })();
    return this.#open;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#closed && !this.#open) return null;
    return await (await this.#get()).read(p);
  }

  async write(p: Uint8Array): Promise<number> {
    return await (await this.#get()).write(p);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#open?.then((t) => t.close(), () => {});
  }
}

const NAME_RE = /<name>\s*([^<]*?)\s*<\/name>/;

/**
 * Defines and starts a transient domain from XML, connects QMP through libvirt and
 * returns it; `destroy()` (or `await using`) stops it. Errors name libvirt's message.
 *
 * @example
 * ```ts ignore
 * await using dom = await startLibvirtDomain({ xml: Deno.readTextFileSync("dom.xml") });
 * console.log(await dom.qmp.execute("query-status"));
 * ```
 */
export async function startLibvirtDomain(
  options: StartLibvirtDomainOptions,
): Promise<LibvirtDomain> {
  if (typeof options.xml !== "string" || !/<domain[\s>]/.test(options.xml)) {
    throw new QmpError("libvirt: xml must be a domain XML document (<domain type='qemu'>…)");
  }
  const xml = NAME_RE.test(options.xml) ? options.xml : options.xml.replace(
    /<domain\b[^>]*>/,
    (m) => `${m}<name>qmpkit-${crypto.randomUUID().slice(0, 8)}</name>`,
  );
  const timeoutMs = parseDuration(options.timeout ?? "30s");
  options.signal?.throwIfAborted();
  const conn = await LibvirtConnection.create({ uri: options.uri, xml });
  try {
    const qmp = await connect(`libvirt+${conn.uri}#${conn.domain}`, {
      ...options.qmp,
      timeout: Math.max(1, timeoutMs),
      signal: options.signal,
    });
    return new LibvirtDomain(conn, qmp);
  } catch (err) {
    await conn.destroy().catch(() => undefined);
    await conn.close();
    throw err;
  }
}
