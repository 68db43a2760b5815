/**
 * libvirt's C API through `Deno.dlopen`: connections, domains, QMP and guest
 * agent passthrough, QEMU monitor events, and libvirt's default event loop run
 * on a worker thread.
 *
 * Every call that may block (RPC to libvirtd) is a `nonblocking` symbol: it runs
 * on a worker thread and returns a promise, so Deno's event loop keeps going.
 * libvirt's errors are thread-local; a process-wide error handler (called on the
 * failing thread, which waits for it) records the message before the failing
 * call returns, so {@link LibvirtError} carries libvirt's own text.
 *
 * The event loop (`virEventRunDefaultImpl` in a loop of nonblocking calls) runs
 * only while at least one {@link LibvirtConnection} is open: the last `close()`
 * stops it, so nothing keeps Deno alive afterwards.
 *
 * Requires `--allow-ffi`.
 *
 * @module
 */
import { ConnectionError, QmpError } from "./errors.ts";

/** A failed libvirt call; the message is libvirt's own (`virGetLastErrorMessage`). */
export class LibvirtError extends ConnectionError {
  /** libvirt's error code (`virErrorNumber`), or 0 when unknown. */
  readonly code: number;
  /** libvirt's message, as libvirt wrote it. */
  readonly libvirtMessage: string;
  /** Creates an error: `what` failed, libvirt said `libvirtMessage`. */
  constructor(what: string, libvirtMessage: string, code = 0, options?: { address?: string }) {
    super(`${what}: libvirt: ${libvirtMessage}`, options);
    this.name = "LibvirtError";
    this.code = code;
    this.libvirtMessage = libvirtMessage;
  }
}

/** libvirt error codes used here (`virErrorNumber`). */
export const VIR_ERR = {
  /** No domain with matching name/uuid. */
  NO_DOMAIN: 42,
  /** Operation is not valid (e.g. the domain is not running). */
  OPERATION_INVALID: 55,
  /** The guest agent is not responding / not configured. */
  AGENT_UNRESPONSIVE: 86,
} as const;

const SYMBOLS = {
  virEventRegisterDefaultImpl: { parameters: [], result: "i32" },
  virEventRunDefaultImpl: { parameters: [], result: "i32", nonblocking: true },
  virEventAddTimeout: {
    parameters: ["i32", "function", "pointer", "pointer"],
    result: "i32",
  },
  virEventUpdateTimeout: { parameters: ["i32", "i32"], result: "void" },
  virSetErrorFunc: { parameters: ["pointer", "function"], result: "void" },
  virConnCopyLastError: { parameters: ["pointer", "buffer"], result: "i32" },
  virConnResetLastError: { parameters: ["pointer"], result: "void" },
  virResetError: { parameters: ["buffer"], result: "void" },
  virConnectOpen: { parameters: ["buffer"], result: "pointer", nonblocking: true },
  virConnectClose: { parameters: ["pointer"], result: "i32", nonblocking: true },
  virDomainLookupByName: {
    parameters: ["pointer", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  virDomainLookupByUUIDString: {
    parameters: ["pointer", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  virDomainFree: { parameters: ["pointer"], result: "i32", nonblocking: true },
  virDomainCreateXML: {
    parameters: ["pointer", "buffer", "u32"],
    result: "pointer",
    nonblocking: true,
  },
  virDomainGetName: { parameters: ["pointer"], result: "pointer" },
  virDomainDestroy: { parameters: ["pointer"], result: "i32", nonblocking: true },
  virDomainIsActive: { parameters: ["pointer"], result: "i32", nonblocking: true },
  virConnectRegisterCloseCallback: {
    parameters: ["pointer", "function", "pointer", "pointer"],
    result: "i32",
  },
  virConnectUnregisterCloseCallback: { parameters: ["pointer", "function"], result: "i32" },
  virConnectSetKeepAlive: { parameters: ["pointer", "i32", "u32"], result: "i32" },
  virConnectDomainEventRegisterAny: {
    parameters: ["pointer", "pointer", "i32", "function", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  virConnectDomainEventDeregisterAny: {
    parameters: ["pointer", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

const QEMU_SYMBOLS = {
  virDomainQemuMonitorCommand: {
    parameters: ["pointer", "buffer", "buffer", "u32"],
    result: "i32",
    nonblocking: true,
  },
  virDomainQemuAgentCommand: {
    parameters: ["pointer", "buffer", "i32", "u32"],
    result: "pointer",
    nonblocking: true,
  },
  virConnectDomainQemuMonitorEventRegister: {
    parameters: ["pointer", "pointer", "pointer", "function", "pointer", "pointer", "u32"],
    result: "i32",
    nonblocking: true,
  },
  virConnectDomainQemuMonitorEventDeregister: {
    parameters: ["pointer", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

const LIBC_SYMBOLS = {
  free: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** A QEMU monitor event as libvirt delivers it. */
export interface LibvirtMonitorEvent {
  /** Event name, e.g. `STOP`. */
  event: string;
  /** QEMU's timestamp: seconds. */
  seconds: number;
  /** QEMU's timestamp: microseconds. */
  micros: number;
  /** The event's `data` as JSON text, or null. */
  details: string | null;
}

/** `VIR_DOMAIN_START_AUTODESTROY`: libvirtd destroys the domain when the connection closes. */
const START_AUTODESTROY = 2;
/** Lifecycle event id (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`). */
const EVENT_ID_LIFECYCLE = 0;
/** `VIR_DOMAIN_EVENT_STOPPED`. */
const LIFECYCLE_STOPPED = 5;

interface Native {
  lib: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
  qemu: Deno.DynamicLibrary<typeof QEMU_SYMBOLS>["symbols"];
  free: (p: Deno.PointerValue) => void;
  wakeTimer: number;
  monitorCb: { pointer: Deno.PointerObject };
  lifecycleCb: { pointer: Deno.PointerObject };
  closeCb: { pointer: Deno.PointerObject };
}

let native: Native | undefined;
let lastError: { message: string; code: number } | undefined;
const monitorHandlers = new Map<number, (e: LibvirtMonitorEvent) => void>();
const lifecycleHandlers = new Map<number, (event: number, detail: number) => void>();
const closeHandlers = new Map<number, (reason: number) => void>();
/** `virConnectCloseReason` texts. */
const CLOSE_REASONS = ["an I/O error", "end of file", "keepalive timeout", "the client"];
let nextHandle = 1;

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

function readCString(p: Deno.PointerValue): string | null {
  return p === null ? null : new Deno.UnsafePointerView(p).getCString();
}

/**
 * Loads libvirt once. Throws a {@link QmpError} naming `--allow-ffi` when FFI is
 * not permitted, and one naming the packages when libvirt is not installed.
 */
function load(): Native {
  if (native) return native;
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  let qemu: Deno.DynamicLibrary<typeof QEMU_SYMBOLS>;
  let libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;
  try {
    lib = Deno.dlopen("libvirt.so.0", SYMBOLS);
  } catch (err) {
    throw loadError(err, "libvirt.so.0");
  }
  try {
    qemu = Deno.dlopen("libvirt-qemu.so.0", QEMU_SYMBOLS);
    libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  } catch (err) {
    lib.close();
    throw loadError(err, "libvirt-qemu.so.0");
  }
  // libvirt's default error handler prints to stderr; record the message instead.
  // It runs on the failing thread, which waits for it, before the call returns.
  const errorCb = Deno.UnsafeCallback.threadSafe(
    { parameters: ["pointer", "pointer"], result: "void" } as const,
    (_user, err) => {
      if (err === null) return;
      const view = new Deno.UnsafePointerView(err);
      const code = view.getInt32(0);
      const msg = readCString(view.getPointer(8));
      lastError = { code, message: msg ?? `error ${code}` };
    },
  );
  errorCb.unref();
  lib.symbols.virSetErrorFunc(null, errorCb.pointer);
  if (lib.symbols.virEventRegisterDefaultImpl() < 0) {
    throw new QmpError("libvirt: cannot register the default event loop implementation");
  }
  // A disabled timer whose only use is waking the loop thread to stop it.
  const wakeCb = Deno.UnsafeCallback.threadSafe(
    { parameters: ["i32", "pointer"], result: "void" } as const,
    () => {},
  );
  wakeCb.unref();
  const wakeTimer = lib.symbols.virEventAddTimeout(-1, wakeCb.pointer, null, null);
  const monitorCb = Deno.UnsafeCallback.threadSafe(
    {
      parameters: ["pointer", "pointer", "pointer", "i64", "u32", "pointer", "pointer"],
      result: "void",
    } as const,
    (_conn, _dom, event, seconds, micros, details, opaque) => {
      const h = monitorHandlers.get(Number(Deno.UnsafePointer.value(opaque)));
      h?.({
        event: readCString(event) ?? "",
        seconds: Number(seconds),
        micros,
        details: readCString(details),
      });
    },
  );
  monitorCb.unref();
  const lifecycleCb = Deno.UnsafeCallback.threadSafe(
    { parameters: ["pointer", "pointer", "i32", "i32", "pointer"], result: "i32" } as const,
    (_conn, _dom, event, detail, opaque) => {
      lifecycleHandlers.get(Number(Deno.UnsafePointer.value(opaque)))?.(event, detail);
      return 0;
    },
  );
  lifecycleCb.unref();
  const closeCb = Deno.UnsafeCallback.threadSafe(
    { parameters: ["pointer", "i32", "pointer"], result: "void" } as const,
    (_conn, reason, opaque) => {
      closeHandlers.get(Number(Deno.UnsafePointer.value(opaque)))?.(reason);
    },
  );
  closeCb.unref();
  const loaded: Native = {
    lib: lib.symbols,
    qemu: qemu.symbols,
    free: libc.symbols.free,
    wakeTimer,
    monitorCb,
    lifecycleCb,
    closeCb,
  };
  native = loaded;
  return loaded;
}

function loadError(err: unknown, name: string): QmpError {
  const text = (err instanceof Error ? err.message : String(err))
    .replace(/^(Could not open library: )+/, "");
  if (err instanceof Error && (err.name === "NotCapable" || err.name === "PermissionDenied")) {
    return new QmpError(
      "libvirt addresses need FFI permission: run Deno with --allow-ffi " +
        "(qmpkit calls libvirt's C library, libvirt.so.0)",
      { cause: err },
    );
  }
  return new QmpError(
    `libvirt is not installed: cannot load ${name} (${text}). ` +
      "Install the client library: apt-get install libvirt-clients",
    { cause: err },
  );
}

/**
 * The error of a call that just failed. With a connection, the copy libvirt keeps on it
 * (`virConnCopyLastError`): exact even while other connections fail on other threads.
 * Without one (`virConnectOpen`), the message the error handler recorded last.
 */
function takeError(conn?: Deno.PointerValue): { message: string; code: number } {
  const recorded = lastError;
  lastError = undefined;
  if (conn && native) {
    const buf = new Uint8Array(256); // struct virError is 80 bytes on x86_64
    if (native.lib.virConnCopyLastError(conn, buf) > 0) {
      const view = new Deno.UnsafePointerView(Deno.UnsafePointer.of(buf)!);
      const code = view.getInt32(0);
      const message = readCString(view.getPointer(8)) ?? `error ${code}`;
      native.lib.virResetError(buf);
      native.lib.virConnResetLastError(conn);
      return { code, message };
    }
  }
  return recorded ?? { message: "unknown error (libvirt recorded none)", code: 0 };
}

// ---- the event loop ---------------------------------------------------------------------------

let loopUsers = 0;
let loopRunning: Promise<void> | undefined;
let loopStop = false;

function startLoop(n: Native): void {
  loopUsers++;
  if (loopRunning) return;
  loopStop = false;
  loopRunning = (async () => {
    while (!loopStop) {
      if (await n.lib.virEventRunDefaultImpl() < 0) break;
    }
  })();
}

async function stopLoop(n: Native): Promise<void> {
  loopUsers--;
  if (loopUsers > 0 || !loopRunning) return;
  const running = loopRunning;
  loopStop = true;
  // An enabled 0 ms timer makes the current (or next) iteration return at once.
  n.lib.virEventUpdateTimeout(n.wakeTimer, 0);
  await running;
  n.lib.virEventUpdateTimeout(n.wakeTimer, -1);
  if (loopRunning === running) loopRunning = undefined;
}

/**
 * Resolves once no libvirt connection is open and the event loop thread has stopped
 * (e.g. after a connect that timed out while libvirt was still blocked in
 * `virConnectOpen`: that connection is closed as soon as libvirt returns). Rejects
 * after `timeoutMs`.
 */
export async function whenLibvirtIdle(timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (loopUsers > 0 || loopRunning) {
    if (Date.now() > deadline) {
      throw new QmpError(`libvirt: ${loopUsers} connection(s) still open after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- connections ------------------------------------------------------------------------------

/** The URI `libvirt:DOMAIN` uses: `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`. */
export function defaultUri(): string {
  try {
    const env = Deno.env.get("LIBVIRT_DEFAULT_URI");
    if (env) return env;
  } catch { /* no --allow-env: the documented default */ }
  return "qemu:///system";
}

/** Options of {@link LibvirtConnection.open}. */
export interface LibvirtOpenOptions {
  /** libvirt URI; default {@link defaultUri}. */
  uri?: string;
  /** Domain name or UUID. */
  domain: string;
  /** Called with each QEMU monitor event of the domain (from the event loop thread). */
  onEvent?: (event: LibvirtMonitorEvent) => void;
  /** Called once when the domain stops (libvirt's lifecycle event `STOPPED`). */
  onStopped?: () => void;
  /**
   * Called once when libvirt closes the connection by itself (libvirtd died, the network
   * failed, or keepalive — 5 s interval, 3 misses — gave up), with the reason.
   */
  onClosed?: (reason: string) => void;
}

/**
 * One libvirt connection bound to one domain. Calls are serialised by the
 * caller (the transports run one command at a time).
 */
export class LibvirtConnection {
  /** The URI the connection was opened with. */
  readonly uri: string;
  /** The domain name as given. */
  readonly domain: string;
  #n: Native;
  #conn: Deno.PointerObject;
  #dom: Deno.PointerObject;
  #handle: number;
  #monitorId = -1;
  #lifecycleId = -1;
  #closeWatched = false;
  #closing: Promise<void> | undefined;

  private constructor(
    n: Native,
    uri: string,
    domain: string,
    conn: Deno.PointerObject,
    dom: Deno.PointerObject,
    handle: number,
  ) {
    this.#n = n;
    this.uri = uri;
    this.domain = domain;
    this.#conn = conn;
    this.#dom = dom;
    this.#handle = handle;
  }

  /**
   * Opens `uri`, looks up the domain, checks it is running and, when asked,
   * subscribes to its QEMU monitor events and lifecycle. Errors are
   * {@link LibvirtError} with libvirt's message; nothing stays open on failure.
   */
  static async open(options: LibvirtOpenOptions): Promise<LibvirtConnection> {
    const n = load();
    const uri = options.uri ?? defaultUri();
    startLoop(n);
    let conn: Deno.PointerValue = null;
    let dom: Deno.PointerValue = null;
    let c: LibvirtConnection | undefined;
    const handle = nextHandle++;
    try {
      conn = await n.lib.virConnectOpen(cstr(uri));
      if (conn === null) {
        const e = takeError();
        throw new LibvirtError(`Cannot connect to libvirt at ${uri}`, e.message, e.code);
      }
      const isUuid = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(
        options.domain,
      );
      dom = isUuid
        ? await n.lib.virDomainLookupByUUIDString(conn, cstr(options.domain))
        : await n.lib.virDomainLookupByName(conn, cstr(options.domain));
      if (dom === null) {
        const e = takeError(conn);
        throw new LibvirtError(`No domain ${options.domain} at ${uri}`, e.message, e.code);
      }
      c = new LibvirtConnection(n, uri, options.domain, conn, dom, handle);
      await c.#checkActive();
      if (options.onStopped) {
        const onStopped = options.onStopped;
        let fired = false;
        lifecycleHandlers.set(handle, (event) => {
          if (event === LIFECYCLE_STOPPED && !fired) {
            fired = true;
            onStopped();
          }
        });
        c.#lifecycleId = await n.lib.virConnectDomainEventRegisterAny(
          conn,
          dom,
          EVENT_ID_LIFECYCLE,
          n.lifecycleCb.pointer,
          Deno.UnsafePointer.create(BigInt(handle)),
          null,
        );
        if (c.#lifecycleId < 0) {
          const e = takeError(conn);
          throw new LibvirtError(`Cannot watch domain ${options.domain}`, e.message, e.code);
        }
      }
      if (options.onClosed) {
        const onClosed = options.onClosed;
        let fired = false;
        closeHandlers.set(handle, (reason) => {
          if (fired) return;
          fired = true;
          onClosed(CLOSE_REASONS[reason] ?? `reason ${reason}`);
        });
        if (
          n.lib.virConnectRegisterCloseCallback(
            conn,
            n.closeCb.pointer,
            Deno.UnsafePointer.create(BigInt(handle)),
            null,
          ) < 0
        ) {
          takeError(conn); // not supported by this driver: go without
          closeHandlers.delete(handle);
        } else {
          c.#closeWatched = true;
        }
        if (n.lib.virConnectSetKeepAlive(conn, 5, 3) < 0) takeError(conn);
      }
      if (options.onEvent) {
        monitorHandlers.set(handle, options.onEvent);
        c.#monitorId = await n.qemu.virConnectDomainQemuMonitorEventRegister(
          conn,
          dom,
          null,
          n.monitorCb.pointer,
          Deno.UnsafePointer.create(BigInt(handle)),
          null,
          0,
        );
        if (c.#monitorId < 0) {
          const e = takeError(conn);
          throw new LibvirtError(
            `Cannot subscribe to QEMU events of ${options.domain}`,
            e.message,
            e.code,
          );
        }
      }
      // The domain may have stopped between the check and the subscription.
      await c.#checkActive();
      return c;
    } catch (err) {
      if (c) {
        await c.close();
      } else {
        if (dom !== null) await n.lib.virDomainFree(dom);
        if (conn !== null) await n.lib.virConnectClose(conn);
        await stopLoop(n);
      }
      throw err;
    }
  }

  async #checkActive(): Promise<void> {
    const active = await this.#n.lib.virDomainIsActive(this.#dom);
    if (active === 1) return;
    const e = active < 0 ? takeError(this.#conn) : {
      message: "Requested operation is not valid: domain is not running",
      code: VIR_ERR.OPERATION_INVALID,
    };
    throw new LibvirtError(
      `Domain ${this.domain} at ${this.uri} is not running (start it with virsh start)`,
      e.message,
      e.code,
    );
  }

  /**
   * Starts a transient domain from `xml` (`virDomainCreateXML`) with
   * `VIR_DOMAIN_START_AUTODESTROY`: libvirtd destroys it when this connection
   * closes, even when this process dies. Returns the connection bound to it;
   * {@link destroy} stops it.
   */
  static async create(options: { uri?: string; xml: string }): Promise<LibvirtConnection> {
    const n = load();
    const uri = options.uri ?? defaultUri();
    startLoop(n);
    let conn: Deno.PointerValue = null;
    try {
      conn = await n.lib.virConnectOpen(cstr(uri));
      if (conn === null) {
        const e = takeError();
        throw new LibvirtError(`Cannot connect to libvirt at ${uri}`, e.message, e.code);
      }
      const dom = await n.lib.virDomainCreateXML(conn, cstr(options.xml), START_AUTODESTROY);
      if (dom === null) {
        const e = takeError(conn);
        throw new LibvirtError(`Cannot start a domain at ${uri}`, e.message, e.code);
      }
      const name = readCString(n.lib.virDomainGetName(dom)) ?? "";
      return new LibvirtConnection(n, uri, name, conn, dom, nextHandle++);
    } catch (err) {
      if (conn !== null) await n.lib.virConnectClose(conn);
      await stopLoop(n);
      throw err;
    }
  }

  /** Stops the domain at once (`virDomainDestroy`); a transient domain is then gone. */
  async destroy(): Promise<void> {
    if (this.#closing) return;
    if (await this.#n.lib.virDomainDestroy(this.#dom) < 0) {
      const e = takeError(this.#conn);
      if (await this.isActive()) throw new LibvirtError(`Domain ${this.domain}`, e.message, e.code);
    }
  }

  /** True while the domain is running (`virDomainIsActive`). */
  async isActive(): Promise<boolean> {
    if (this.#closing) return false;
    return await this.#n.lib.virDomainIsActive(this.#dom) === 1;
  }

  /**
   * Runs one QMP command (JSON text, no `id`) and returns libvirt's reply text
   * (`{"return":…,"id":"libvirt-N"}` or `{"error":…}`).
   */
  async monitorCommand(json: string): Promise<string> {
    if (this.#closing) throw new LibvirtError("Cannot run a command", "connection closed");
    const out = new BigUint64Array(1);
    const rc = await this.#n.qemu.virDomainQemuMonitorCommand(
      this.#dom,
      cstr(json),
      new Uint8Array(out.buffer),
      0,
    );
    if (rc < 0) {
      const e = takeError(this.#conn);
      throw new LibvirtError(`Domain ${this.domain}`, e.message, e.code);
    }
    const p = Deno.UnsafePointer.create(out[0]);
    try {
      return readCString(p) ?? "";
    } finally {
      this.#n.free(p);
    }
  }

  /**
   * Runs one guest agent command (JSON text) through libvirt
   * (`virDomainQemuAgentCommand`) and returns the agent's reply text.
   * `timeoutSeconds`: libvirt's own wait for the reply (-2 forever, -1 libvirt's default,
   * 0 no wait, else seconds).
   */
  async agentCommand(json: string, timeoutSeconds: number): Promise<string> {
    if (this.#closing) throw new LibvirtError("Cannot run an agent command", "connection closed");
    const p = await this.#n.qemu.virDomainQemuAgentCommand(
      this.#dom,
      cstr(json),
      timeoutSeconds,
      0,
    );
    if (p === null) {
      const e = takeError(this.#conn);
      throw new LibvirtError(`Guest agent of domain ${this.domain}`, e.message, e.code);
    }
    try {
      return readCString(p) ?? "";
    } finally {
      this.#n.free(p);
    }
  }

  /**
   * Unsubscribes, frees the domain, closes the connection and, when it was the
   * last, stops the event loop. Idempotent; resolves when all is released.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const n = this.#n;
    try {
      if (this.#monitorId >= 0) {
        if (
          await n.qemu.virConnectDomainQemuMonitorEventDeregister(this.#conn, this.#monitorId) < 0
        ) {
          takeError(this.#conn);
        }
      }
      if (this.#lifecycleId >= 0) {
        if (await n.lib.virConnectDomainEventDeregisterAny(this.#conn, this.#lifecycleId) < 0) {
          takeError(this.#conn);
        }
      }
      if (this.#closeWatched) {
        closeHandlers.delete(this.#handle);
        if (n.lib.virConnectUnregisterCloseCallback(this.#conn, n.closeCb.pointer) < 0) {
          takeError(this.#conn);
        }
      }
      await n.lib.virDomainFree(this.#dom);
      if (await n.lib.virConnectClose(this.#conn) < 0) takeError();
    } finally {
      monitorHandlers.delete(this.#handle);
      lifecycleHandlers.delete(this.#handle);
      closeHandlers.delete(this.#handle);
      await stopLoop(n);
    }
  }
}
