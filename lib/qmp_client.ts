/**
 * QmpClient, the QMP session (what qemu.qmp calls `qmp_client`): greeting,
 * capability negotiation, the session state, message dispatch (greeting,
 * events into history and listeners, replies to the command engine), the
 * event API (listen, events, mark, waitEvent), schema, close and shutdown.
 * The parts it drives live beside it: `command_engine.ts` (ids, pending,
 * oob window, timeouts, writes), `read_loop.ts` (reads, framing, catch-up),
 * `reconnect.ts` (back-off and re-handshake), `transcript.ts` (redacted
 * recording). `connect()` (`connect.ts`) dials and hands the transport here.
 *
 * @module
 */
import { type Duration, parseDuration } from "./duration.ts";
import {
  ConnectionClosedError,
  ConnectionError,
  FdPassingError,
  NegotiationError,
  ProtocolError,
  QmpError,
} from "./errors.ts";
import { EventListener, eventPredicate, type ListenOptions } from "./events.ts";
import { ListenerRegistry } from "./listener_registry.ts";
import { waitForEvent } from "./event_wait.ts";
import { EventHistory } from "./event_history.ts";
import {
  type GreetingWaiter,
  type HandshakeHost,
  type HandshakeOutcome,
  HandshakeRun,
  negotiationFailed,
} from "./handshake.ts";
import { JsonObjectFramer } from "./framing.ts";
import {
  classifyMessage,
  eventFromMessage,
  type Greeting,
  isEventMessage,
  parseGreeting,
  type QmpEvent,
} from "./protocol.ts";
import { isFdTransport, type Transport } from "./transport.ts";
// Types only: fd passing, the schema and reconnection are imported when first used, so a
// plain connection (a one-shot `qmp exec`) does not load them (tests/cli_startup_test.ts).
import type { FdSource } from "./fd_passing.ts";
import type { QmpSchema, SchemaEntry } from "./qapi/schema.ts";
import { CommandEngine, type CommandHost } from "./command_engine.ts";
import { readLoop, type ReadLoopHost } from "./read_loop.ts";
import type { ReconnectHost } from "./reconnect.ts";
import { recordTranscript } from "./transcript.ts";
import type { EventName, QmpCommands } from "./qapi/types.ts";
import type { ExecuteRestIn, ReturnIn } from "./command_map.ts";
import type {
  ClientOptions,
  ClientState,
  ExecuteOptions,
  TypedEvent,
  WaitEventOptions,
} from "./client_options.ts";

export { MAX_INBAND_IN_FLIGHT } from "./command_engine.ts";

let startHandshakeOf: (
  client: QmpClient<unknown>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  outcome: HandshakeOutcome,
) => void;

/**
 * Runs `client`'s handshake (greeting, then negotiation unless `negotiate: false`) like
 * {@link QmpClient.handshake}, reporting to `outcome` instead of a promise (used by
 * `connect()`; not part of the API).
 */
export function startHandshake(
  client: QmpClient<unknown>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  outcome: HandshakeOutcome,
): void {
  startHandshakeOf(client, timeoutMs, signal, outcome);
}

/**
 * A QMP connection. Get one with {@link connect} (or `launch()`); it is
 * negotiated and ready when the promise resolves.
 *
 * Commands may be issued concurrently; replies are routed by id. Events are
 * delivered to every listener registered when they arrive, so arm a wait
 * *before* the action that causes the event:
 *
 * @example
 * ```ts ignore
 * await using qmp = await connect("unix:/run/vm1/qmp.sock");
 * const stopped = qmp.waitEvent("STOP", { timeout: "5s" }); // armed now
 * await qmp.execute("stop");
 * await stopped; // caught although QEMU sends STOP before stop's reply
 * ```
 */
export class QmpClient<C = QmpCommands> implements AsyncDisposable {
  /** The address this client is connected to, for messages (`unix:/x`, `tcp:h:p`). */
  readonly address: string;
  #transport: Transport;
  #framer: JsonObjectFramer;
  readonly #options: ClientOptions;
  readonly #historySize: number;
  #state: ClientState = "connecting";
  #greeting: Greeting | undefined;
  #greetingWaiter: GreetingWaiter | undefined;
  #negotiated = false;
  #oob = false;
  readonly #commands: CommandEngine;
  /** Created with the first listener or wait: an idle connection needs none. */
  #registry: ListenerRegistry | undefined;
  /** Recent events for `since`; created with the first event. */
  #history: EventHistory | undefined;
  /** The engine's and the read loop's view of this client (one object, no closures). */
  readonly #host: CommandHost & ReadLoopHost & HandshakeHost;
  #seq = 0;
  #closeError: ConnectionClosedError | undefined;
  #schema: Promise<QmpSchema> | undefined;
  /** Set when a listener is half full: the read loop yields so its consumer can run. */
  #letListenersCatchUp = false;
  readonly #dial: ((signal: AbortSignal) => Promise<Transport>) | undefined;
  #reconnecting: Promise<void> | undefined;
  #stopReconnect: (() => void) | undefined;
  #readLoop: Promise<void>;
  /** {@link closed}, created when first asked for (most connections never are). */
  #closed: Promise<void> | undefined;
  #resolveClosed: (() => void) | undefined;

  /**
   * Wraps an open transport and starts reading. Most code should call
   * {@link connect} instead; use this to run QMP over a custom transport
   * (e.g. an in-memory pair in tests), then `await client.handshake()`.
   * `dial` opens a fresh transport; it is needed only for `reconnect`.
   */
  constructor(
    transport: Transport,
    options: ClientOptions = {},
    dial?: (signal: AbortSignal) => Promise<Transport>,
  ) {
    this.#dial = dial;
    this.#transport = transport;
    this.#options = options;
    this.address = options.address ?? "(transport)";
    this.#framer = new JsonObjectFramer({ maxMessageSize: options.maxMessageSize });
    this.#host = new QmpClient.#Host<C>(this);
    this.#commands = new CommandEngine(
      this.#host,
      options.commandTimeout === undefined ? undefined : parseDuration(options.commandTimeout),
    );
    this.#historySize = options.historySize ?? 256;
    this.#readLoop = readLoop(transport, this.#framer, this.#host);
  }

  /** Resolves once the connection is closed, for whatever reason. Never rejects. */
  get closed(): Promise<void> {
    return this.#closed ??= this.#state === "closed"
      ? Promise.resolve()
      : new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** The server's greeting (version and offered capabilities). Throws before it arrived. */
  get greeting(): Greeting {
    if (!this.#greeting) throw new QmpError("No greeting received yet: await handshake() first");
    return this.#greeting;
  }

  /** Current state: `"connecting"` until the greeting, `"open"`, `"reconnecting"`, `"closed"`. */
  get state(): ClientState {
    return this.#state;
  }

  /** True once `qmp_capabilities` succeeded. */
  get negotiated(): boolean {
    return this.#negotiated;
  }

  /** True when the `oob` capability was enabled, so {@link executeOob} can be used. */
  get oob(): boolean {
    return this.#oob;
  }

  /** Why the connection closed, once it has; `undefined` while open. */
  get closeError(): ConnectionClosedError | undefined {
    return this.#closeError;
  }

  /** Number of commands awaiting a reply (sent or queued). */
  get pendingCommands(): number {
    return this.#commands.size;
  }

  /**
   * Waits for the greeting and, unless `negotiate: false`, negotiates. Called
   * by {@link connect}; call it yourself after `new QmpClient(transport)`.
   *
   * Events that arrive before the greeting (some servers send them) are kept
   * like any other event: listeners registered before the handshake receive
   * them, and they stay in the recent-event history, so
   * `waitEvent(name, { since: 0 })` finds them after `connect()`.
   */
  handshake(options: { timeout?: Duration; signal?: AbortSignal } = {}): Promise<Greeting> {
    return this.#handshake(options, () => this.#shutdown("error", undefined));
  }

  /** The handshake; `giveUp` runs when the greeting does not come in time. */
  #handshake(
    options: { timeout?: Duration; signal?: AbortSignal },
    giveUp: () => void,
  ): Promise<Greeting> {
    return new Promise((resolve, reject) => {
      this.#startHandshake(options.timeout, options.signal, {
        gaveUp: giveUp,
        done: resolve,
        failed: reject,
      });
    });
  }

  /** Starts a handshake that reports to `outcome` once (see `handshake.ts`). */
  #startHandshake(
    timeout: Duration | undefined,
    signal: AbortSignal | undefined,
    outcome: HandshakeOutcome,
  ): void {
    let ms: number;
    try {
      ms = timeout === undefined ? 10_000 : parseDuration(timeout);
    } catch (err) {
      outcome.failed(err);
      return;
    }
    new HandshakeRun(this.#host, ms, signal, outcome).start();
  }

  static {
    // connect() drives the handshake with an outcome object; not part of the API.
    startHandshakeOf = (client, timeoutMs, signal, outcome) =>
      client.#startHandshake(timeoutMs, signal, outcome);
  }

  /** Why `qmp_capabilities` cannot be sent now, if it cannot. */
  #negotiationProblem(greeting: Greeting, oob: boolean | undefined): NegotiationError | undefined {
    if (this.#negotiated) return new NegotiationError("Capabilities were already negotiated");
    if (oob && !greeting.capabilities.includes("oob")) {
      return new NegotiationError(
        `The oob capability was requested but ${this.address} offers only ` +
          `[${greeting.capabilities.join(", ")}]. Connect without oob: true.`,
      );
    }
    return undefined;
  }

  /** Sends `qmp_capabilities` (after {@link negotiationProblem} said it may). */
  #sendCapabilities(
    oob: boolean,
    timeout: Duration | undefined,
    signal: AbortSignal | undefined,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ): void {
    if (this.#state === "closed") {
      reject(this.#closedError("qmp_capabilities"));
      return;
    }
    this.#commands.submitTo(
      "qmp_capabilities",
      oob ? { enable: ["oob"] } : undefined,
      false,
      { timeout, signal },
      undefined,
      resolve,
      reject,
    );
  }

  /**
   * Runs `qmp_capabilities`, enabling `oob` when asked. Throws
   * {@link NegotiationError} when `oob` is requested but not offered, or QEMU
   * refuses.
   */
  negotiate(
    options: { oob?: boolean; timeout?: Duration; signal?: AbortSignal } = {},
  ): Promise<void> {
    const greeting = this.#greeting;
    if (greeting === undefined) return this.#greetingPromise().then(() => this.negotiate(options));
    const problem = this.#negotiationProblem(greeting, options.oob);
    if (problem !== undefined) return Promise.reject(problem);
    const oob = options.oob === true;
    return new Promise((resolve, reject) =>
      this.#sendCapabilities(oob, options.timeout, options.signal, resolve, reject)
    ).then(
      () => {
        this.#negotiated = true;
        this.#oob = oob;
      },
      negotiationFailed,
    );
  }

  /**
   * Runs a command and resolves with its `return` value. Rejects with
   * {@link QmpCommandError} when QEMU answers with an error,
   * {@link TimeoutError} / {@link AbortError} per `options`, and
   * {@link ConnectionClosedError} when the connection is or becomes closed.
   *
   * @example
   * ```ts ignore
   * const { status } = await qmp.execute("query-status");
   * await qmp.execute("device_add", { driver: "usb-tablet", id: "tab0" });
   * ```
   */
  execute<K extends keyof C & string>(
    command: K,
    ...rest: ExecuteRestIn<C, K>
  ): Promise<ReturnIn<C, K>> {
    const args = rest[0];
    const options = rest[1];
    return this.#run(command, args, false, options) as Promise<ReturnIn<C, K>>;
  }

  /**
   * Untyped escape hatch: runs any command by name, for commands the generated
   * types do not know (newer QEMU, downstream `__` commands).
   */
  executeRaw(
    command: string,
    args?: Record<string, unknown>,
    options?: ExecuteOptions,
  ): Promise<unknown> {
    return this.#run(command, args, false, options);
  }

  /**
   * Runs a command out-of-band (`exec-oob`): it may overtake queued in-band
   * commands. Needs `oob: true` at connect time and a command that allows it
   * (QEMU 7.2: `migrate-recover`, `migrate-pause`, `yank`, `query-yank`).
   */
  executeOob<K extends keyof C & string>(
    command: K,
    ...rest: ExecuteRestIn<C, K>
  ): Promise<ReturnIn<C, K>> {
    const args = rest[0];
    const options = rest[1];
    if (!this.#oob && (this.#state === "open" || this.#state === "connecting")) {
      return Promise.reject(
        new NegotiationError(
          `exec-oob needs the oob capability: connect with { oob: true } (${command} not sent)`,
        ),
      );
    }
    return this.#run(command, args, true, options) as Promise<ReturnIn<C, K>>;
  }

  /**
   * Registers a listener now and returns it: every event that arrives from
   * this moment on and passes the filter is buffered until read.
   *
   * @example
   * ```ts ignore
   * using devs = qmp.listen({ names: ["DEVICE_DELETED"], where: { device: "tab0" } });
   * await qmp.execute("device_del", { id: "tab0" });
   * const ev = await devs.get({ timeout: "5s" });
   * ```
   */
  listen<N extends EventName>(
    options: ListenOptions<TypedEvent<N>> & { names: readonly N[] },
  ): EventListener<TypedEvent<N>>;
  /** Registers a listener for all events (or those `where` accepts). */
  listen(options?: ListenOptions<TypedEvent>): EventListener<TypedEvent>;
  listen(options: ListenOptions<QmpEvent> = {}): EventListener<QmpEvent> {
    const listener: EventListener<QmpEvent> = new EventListener(
      options,
      () => this.#registry?.delete(listener),
    );
    if (this.#state === "closed") {
      const reason = this.#closeError?.reason;
      listener.end(this.#closeError, reason === "client" || reason === "quit");
    } else if (!listener.ended) {
      this.#listeners().add(listener, options.names, this.#seq);
    }
    return listener;
  }

  /**
   * Events as an async iterator, filtered by name; the same as {@link listen}.
   * Iteration ends when the connection closes cleanly, and throws
   * {@link ConnectionClosedError} when the peer went away unexpectedly.
   *
   * @example
   * ```ts ignore
   * for await (const ev of qmp.events({ names: ["RESET", "SHUTDOWN"] })) {
   *   console.log(ev.event, ev.data.reason, ev.time);
   * }
   * ```
   */
  events<N extends EventName>(
    options: ListenOptions<TypedEvent<N>> & { names: readonly N[] },
  ): EventListener<TypedEvent<N>>;
  /** All events (or those `where` accepts) as an async iterator. */
  events(options?: ListenOptions<TypedEvent>): EventListener<TypedEvent>;
  events(options: ListenOptions<QmpEvent> = {}): EventListener<QmpEvent> {
    return this.listen(options as ListenOptions<TypedEvent>) as EventListener<QmpEvent>;
  }

  /**
   * The sequence number of the last event received. Pass it as `since` to
   * {@link waitEvent} to also catch events that arrive before the wait is made.
   */
  mark(): number {
    return this.#seq;
  }

  /**
   * Waits for one event named `name` (and matching `where`). The listener is
   * registered when this is called, so call it before the action and await
   * it after: no event can slip between. The returned promise is marked
   * handled, so an unawaited wait that times out does not crash the process.
   *
   * @example
   * ```ts ignore
   * const gone = qmp.waitEvent("DEVICE_DELETED", { where: { device: "tab0" }, timeout: "5s" });
   * await qmp.execute("device_del", { id: "tab0" });
   * const ev = await gone; // ev.data.path === "/machine/peripheral/tab0"
   * ```
   */
  waitEvent<N extends EventName>(
    name: N,
    options: WaitEventOptions<TypedEvent<N>> = {},
  ): Promise<TypedEvent<N>> {
    if (options.since !== undefined) {
      const since = options.since;
      const accepts = eventPredicate([name], options.where);
      const hit = this.#history?.find((e) => e.seq > since && accepts(e));
      if (hit) return Promise.resolve(hit as TypedEvent<N>);
    }
    if (this.#state === "closed") {
      const p = Promise.reject(this.#closeError);
      p.catch(() => {});
      return p;
    }
    // Marked handled by waitForEvent.
    return waitForEvent<TypedEvent<N>>(this.#listeners(), name, options.where, options, this.#seq);
  }

  /**
   * The server's QAPI schema (`query-qmp-schema`), fetched on first use and
   * cached for the connection: command/event names, argument checks.
   */
  schema(): Promise<QmpSchema> {
    if (!this.#schema) {
      const schema = this.#submit("query-qmp-schema", undefined, false, undefined).then(
        (entries) =>
          import("./qapi/schema.ts").then((m) => new m.QmpSchema(entries as SchemaEntry[])),
      );
      this.#schema = schema;
      schema.catch(() => {
        if (this.#schema === schema) this.#schema = undefined; // retry on next use
      });
    }
    return this.#schema;
  }

  /**
   * Closes the connection. Pending commands and waits reject with
   * {@link ConnectionClosedError}; event iterators end. Idempotent.
   */
  async close(): Promise<void> {
    this.#shutdown("client", undefined);
    await this.#reconnecting;
    await this.#readLoop;
    await this.#commands.flushing;
  }

  /** Closes the connection (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---------------------------------------------------------------- internals

  #greetingPromise(): Promise<Greeting> {
    if (this.#greeting) return Promise.resolve(this.#greeting);
    if (this.#state === "closed") return Promise.reject(this.#closedError("the greeting"));
    return new Promise((resolve, reject) => this.#addGreetingWaiter({ resolve, reject }));
  }

  /** `waiter.resolve` gets the greeting when it comes; `waiter.reject`, if the connection ends first. */
  #addGreetingWaiter(waiter: GreetingWaiter): void {
    const prev = this.#greetingWaiter;
    this.#greetingWaiter = prev === undefined ? waiter : {
      resolve: (g) => {
        prev.resolve(g);
        waiter.resolve(g);
      },
      reject: (e) => {
        prev.reject(e);
        waiter.reject(e);
      },
    };
  }

  #run(
    command: string,
    args: unknown,
    oob: boolean,
    options: ExecuteOptions | undefined,
    fds?: number[],
  ): Promise<unknown> {
    if (options?.fds !== undefined && fds === undefined) {
      return this.#runWithFds(command, args, oob, options, options.fds);
    }
    if (!this.#options.validate || this.#state === "closed") {
      return this.#submit(command, args, oob, options, fds);
    }
    return this.schema().then((schema) => {
      const problem = schema.validateArguments(command, args);
      if (problem) throw problem;
      return this.#submit(command, args, oob, options, fds);
    });
  }

  /** Checks the fds now; sends the command once the previous fd-carrying one is answered. */
  #runWithFds(
    command: string,
    args: unknown,
    oob: boolean,
    options: ExecuteOptions,
    sources: readonly FdSource[],
  ): Promise<unknown> {
    let fds: number[];
    try {
      if (!isFdTransport(this.#transport)) {
        throw new FdPassingError(
          `Cannot pass file descriptors with ${command}: ${this.address} is not a unix socket ` +
            `opened for fd passing. Connect with connect("unix:/path", { fdPassing: true }) ` +
            `(and --allow-ffi); TCP cannot carry descriptors.`,
        );
      }
      if (fdPassing === undefined) {
        // The first fds of the process: load fd_passing.ts, then go on as below.
        fdPassingLoad ??= import("./fd_passing.ts").then((m) => (fdPassing = m));
        return fdPassingLoad.then(() => this.#runWithFds(command, args, oob, options, sources));
      }
      fds = fdPassing.rawFds(command, sources);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#commands.inFdTurn(() => this.#run(command, args, oob, options, fds));
  }

  #submit(
    command: string,
    args: unknown,
    oob: boolean,
    options: ExecuteOptions | undefined,
    fds?: number[],
  ): Promise<unknown> {
    if (this.#state === "closed") return Promise.reject(this.#closedError(command));
    if (this.#state === "reconnecting" && command !== "qmp_capabilities") {
      return Promise.reject(
        new ConnectionClosedError(
          `Cannot run ${command}: the connection to ${this.address} dropped and is being ` +
            `re-established`,
          { address: this.address, reason: "peer" },
        ),
      );
    }
    return this.#commands.submit(command, args, oob, options, fds);
  }

  /** The listener registry, created on first use. */
  #listeners(): ListenerRegistry {
    return this.#registry ??= new ListenerRegistry();
  }

  /**
   * The command engine's and the read loop's view of a client: one small object per
   * connection whose methods live on a shared prototype (a host of arrow functions
   * cost ~1 KiB of closures per connection). Declared inside the class so that its
   * methods reach the client's private members.
   */
  static readonly #Host = class<M> implements CommandHost, ReadLoopHost, HandshakeHost {
    readonly #c: QmpClient<M>;
    constructor(client: QmpClient<M>) {
      this.#c = client;
    }
    oob(): boolean {
      return this.#c.#oob;
    }
    isClosed(): boolean {
      return this.#c.#isClosed();
    }
    write(data: Uint8Array): Promise<number> {
      return this.#c.#transport.write(data);
    }
    writeWithFds(data: Uint8Array, fds: number[]): Promise<number> {
      const transport = this.#c.#transport;
      return isFdTransport(transport) ? transport.writeWithFds(data, fds) : Promise.resolve(0);
    }
    writeFailed(err: unknown): void {
      this.#c.#onReadOrWriteError(err);
    }
    sent(message: Record<string, unknown>): void {
      this.#c.#record("send", message);
    }
    warn(err: QmpError): void {
      this.#c.#warn(err);
    }
    isCurrent(transport: Transport): boolean {
      return !this.#c.#isClosed() && this.#c.#transport === transport;
    }
    dispatch(message: Record<string, unknown>): void {
      this.#c.#dispatch(message);
    }
    takeCatchUp(): boolean {
      const yes = this.#c.#letListenersCatchUp;
      this.#c.#letListenersCatchUp = false;
      return yes;
    }
    behind(): number {
      return this.#c.#registry?.behind() ?? 0;
    }
    clearBehind(): void {
      this.#c.#registry?.clearBehind();
    }
    ended(): void {
      this.#c.#lost(this.#c.#commands.quitSent ? "quit" : "peer", undefined);
    }
    failed(err: unknown): void {
      this.#c.#onReadOrWriteError(err);
    }
    get address(): string {
      return this.#c.address;
    }
    greeting(): Greeting | undefined {
      return this.#c.#greeting;
    }
    closedBeforeGreeting(): ConnectionClosedError | undefined {
      return this.#c.#state === "closed" ? this.#c.#closedError("the greeting") : undefined;
    }
    waitGreeting(waiter: GreetingWaiter): void {
      this.#c.#addGreetingWaiter(waiter);
    }
    negotiates(): boolean {
      return this.#c.#options.negotiate !== false;
    }
    wantsOob(): boolean {
      return this.#c.#options.oob === true;
    }
    negotiationProblem(greeting: Greeting, oob: boolean): QmpError | undefined {
      return this.#c.#negotiationProblem(greeting, oob);
    }
    sendCapabilities(
      oob: boolean,
      timeout: number,
      signal: AbortSignal | undefined,
      resolve: (value: unknown) => void,
      reject: (error: unknown) => void,
    ): void {
      this.#c.#sendCapabilities(oob, timeout, signal, resolve, reject);
    }
    negotiated(oob: boolean): void {
      this.#c.#negotiated = true;
      this.#c.#oob = oob;
    }
  };

  /** A method, so TypeScript does not narrow the state across awaits. */
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #onReadOrWriteError(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.#lost("error", err);
    } else if (
      this.#commands.quitSent && err instanceof Error &&
      (err.name === "ConnectionReset" || err.name === "BrokenPipe")
    ) {
      this.#lost("quit", undefined); // QEMU exits right after quit; a reset is normal.
    } else {
      this.#lost("peer", err);
    }
  }

  /** The connection ended on its own: reconnect when the policy says so, else shut down. */
  #lost(reason: "peer" | "quit" | "error", cause: unknown): void {
    const policy = this.#options.reconnect;
    if (this.#state === "reconnecting") {
      // A fresh connection failed during its handshake: fail the attempt.
      try {
        this.#transport.close();
      } catch { /* closed */ }
      const w = this.#greetingWaiter;
      this.#greetingWaiter = undefined;
      w?.reject(cause ?? new ConnectionClosedError("Connection lost during the handshake"));
      this.#failPending("peer", cause, "the connection dropped during a reconnect");
      return;
    }
    if (reason === "peer" && policy && this.#dial && this.#state === "open") {
      const error = new ConnectionClosedError(this.#reasonText("peer", cause), {
        address: this.address,
        reason: "peer",
        cause,
      });
      this.#state = "reconnecting";
      try {
        this.#transport.close();
      } catch { /* closed */ }
      this.#failPending("peer", cause, this.#reasonText("peer", cause));
      const p = typeof policy === "object" ? policy : {};
      p.onDisconnect?.(error);
      this.#reconnecting = import("./reconnect.ts").then((m) =>
        // Closed while reconnect.ts loaded: nothing to stop, nothing to do.
        this.#isClosed() ? undefined : m.reconnectLoop(
          p,
          error,
          this.#reconnectHost(),
          (stop) => (this.#stopReconnect = stop),
        )
      ).finally(() => {
        this.#reconnecting = undefined;
        this.#stopReconnect = undefined;
      });
      return;
    }
    this.#shutdown(reason, cause);
  }

  /** The reconnect loop's view of this session. */
  #reconnectHost(): ReconnectHost {
    return {
      isClosed: () => this.#isClosed(),
      dial: (signal) => this.#dial!(signal),
      attach: (transport) => {
        this.#transport = transport;
        this.#framer = new JsonObjectFramer({ maxMessageSize: this.#options.maxMessageSize });
        this.#greeting = undefined;
        this.#negotiated = false;
        this.#oob = false;
        this.#commands.quitSent = false;
        this.#schema = undefined; // the server may have changed (restarted, upgraded)
        this.#readLoop = readLoop(transport, this.#framer, this.#host);
      },
      handshake: (options, giveUp) => this.#handshake(options, giveUp),
      reopened: () => (this.#state = "open"),
      giveUp: (cause) => this.#shutdown("peer", cause),
    };
  }

  #dispatch(raw: Record<string, unknown>): void {
    if (this.#options.transcript) {
      // Replies are recorded with their request as context, for redaction.
      const request = typeof raw.id === "number" ? this.#commands.request(raw.id) : undefined;
      this.#record("recv", raw, request);
    }
    if (!this.#greeting && !isEarlyEvent(raw)) {
      const greeting = parseGreeting(raw); // throws ProtocolError: ends the connection
      this.#greeting = greeting;
      if (this.#state === "connecting") this.#state = "open";
      const w = this.#greetingWaiter;
      this.#greetingWaiter = undefined;
      w?.resolve(greeting);
      return;
    }
    if ("QMP" in raw && !("return" in raw) && !("error" in raw) && !("event" in raw)) {
      // QEMU 7.2 over TCP can send a second greeting on a new connection when the previous
      // client disconnected just before (its "opened" handling races the new accept).
      // It carries nothing new: skip it.
      return;
    }
    if (isEventMessage(raw)) {
      const event = eventFromMessage(raw, ++this.#seq);
      if (this.#historySize > 0) {
        (this.#history ??= new EventHistory(this.#historySize)).push(event);
      }
      if (this.#registry?.deliver(event)) this.#letListenersCatchUp = true;
      return;
    }
    const msg = classifyMessage(raw);
    if (msg.kind === "event") return; // isEventMessage took it (a type guard for route)
    this.#commands.route(msg, raw);
  }

  #record(
    direction: "send" | "recv",
    message: Record<string, unknown>,
    request?: { command: string; args: unknown },
  ): void {
    const hook = this.#options.transcript;
    if (!hook) return;
    recordTranscript(
      hook,
      this.#options.redact !== false,
      (e) => this.#warn(e),
      direction,
      message,
      request,
    );
  }

  #warn(err: QmpError): void {
    if (this.#options.onWarning) this.#options.onWarning(err);
    else console.warn(`qmpkit: ${err.message}`);
  }

  #closedError(what: string): ConnectionClosedError {
    const base = this.#closeError;
    const why = base ? base.message : `the connection to ${this.address} is closed`;
    return new ConnectionClosedError(`Cannot run ${what}: ${why}`, {
      address: this.address,
      reason: base?.reason ?? "client",
      cause: base?.cause,
    });
  }

  #reasonText(reason: "client" | "peer" | "quit" | "error", cause: unknown): string {
    switch (reason) {
      case "client":
        return `the connection to ${this.address} was closed by the client`;
      case "peer":
        // A transport that knows why it broke (an ssh tunnel that died) says so itself.
        if (cause instanceof ConnectionError && !(cause instanceof ConnectionClosedError)) {
          return `the connection to ${this.address} was lost: ${cause.message}`;
        }
        return `QEMU closed the connection to ${this.address} (it exited or was killed)` +
          (cause instanceof Error ? `: ${cause.message}` : "");
      case "quit":
        return `QEMU closed the connection to ${this.address} after quit`;
      case "error":
        return cause instanceof Error
          ? `the connection to ${this.address} was closed after a protocol error: ${cause.message}`
          : `the connection to ${this.address} was abandoned`;
    }
  }

  /** Settles every pending command: rejected, except a `quit` that the close fulfilled. */
  #failPending(reason: "client" | "peer" | "quit" | "error", cause: unknown, text: string): void {
    this.#commands.failAll(
      reason === "quit",
      (entry) =>
        new ConnectionClosedError(`${entry.command} did not complete: ${text}`, {
          address: this.address,
          reason,
          cause,
        }),
    );
  }

  #shutdown(reason: "client" | "peer" | "quit" | "error", cause: unknown): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#stopReconnect?.();
    const text = this.#reasonText(reason, cause);
    const closeError = new ConnectionClosedError(
      text.charAt(0).toUpperCase() + text.slice(1),
      { address: this.address, reason, cause },
    );
    this.#closeError = closeError;
    try {
      this.#transport.close();
    } catch { /* already closed */ }
    const graceful = reason === "client" || reason === "quit";
    this.#failPending(reason, cause, text);
    for (const l of this.#registry?.clear() ?? []) l.end(closeError, graceful);
    const w = this.#greetingWaiter;
    this.#greetingWaiter = undefined;
    w?.reject(
      cause instanceof ProtocolError ? cause : new ConnectionClosedError(
        `No QMP greeting: ${text}`,
        { address: this.address, reason, cause },
      ),
    );
    this.#resolveClosed?.();
  }
}

/** fd_passing.ts, once loaded (by the first command that passes descriptors). */
let fdPassing: typeof import("./fd_passing.ts") | undefined;
let fdPassingLoad: Promise<unknown> | undefined;

/** An event (not a greeting) that arrived before the greeting: tolerated, and kept. */
function isEarlyEvent(raw: Record<string, unknown>): boolean {
  return typeof raw.event === "string" && !("QMP" in raw) && !("return" in raw) &&
    !("error" in raw);
}
