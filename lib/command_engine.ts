/**
 * The command engine of one QMP session: command ids, the pending map, the
 * in-band window when oob is on (QEMU queues at most
 * {@link MAX_INBAND_IN_FLIGHT}), per-command timeouts and aborts, ids given up
 * on (their late replies are dropped), the write queue (a command carrying
 * file descriptors starts its own write; such commands go one at a time), and
 * routing of replies back to their command. It knows nothing of greetings, events or
 * reconnection: {@link QmpClient} drives it through {@link CommandHost}.
 *
 * @module
 */
import { parseDuration } from "./duration.ts";
import {
  AbortError,
  type ConnectionClosedError,
  ProtocolError,
  QmpCommandError,
  type QmpError,
  QmpValidationError,
  ServerParseError,
  TimeoutError,
} from "./errors.ts";
import { concatBytes } from "./bytes.ts";
import { excerpt } from "./framing.ts";
import { stringifyJson } from "./json.ts";
import { commandMessage } from "./protocol.ts";
import type { ExecuteOptions } from "./client_options.ts";
import { type LaneTimeout, scheduleTimeout, type TimeoutTarget } from "./timer_lanes.ts";
import { type AbortTarget, unwatchAbort, watchAbort } from "./abort_fanout.ts";

/** How many in-band commands QEMU queues when oob is on (`QMP_REQ_QUEUE_LEN_MAX`). */
export const MAX_INBAND_IN_FLIGHT = 8;

/**
 * A command sent or queued, awaiting its reply. One object per command: it is its
 * own timeout and abort target (no closures per command, and its timeout shares a
 * runtime timer with every other of the same duration, see `timer_lanes.ts`).
 */
export class Pending implements TimeoutTarget, AbortTarget {
  readonly id: number;
  readonly command: string;
  readonly args: unknown;
  readonly oob: boolean;
  readonly message: Record<string, unknown>;
  /** Descriptors to send with the message (`SCM_RIGHTS`), if any. */
  readonly fds: number[] | undefined;
  sent = false;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  readonly #engine: CommandEngine;
  readonly #timeoutMs: number | undefined;
  readonly #signal: AbortSignal | undefined;
  #timer: LaneTimeout | undefined;

  constructor(
    engine: CommandEngine,
    id: number,
    command: string,
    args: unknown,
    oob: boolean,
    fds: number[] | undefined,
    timeoutMs: number | undefined,
    signal: AbortSignal | undefined,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ) {
    this.#engine = engine;
    this.id = id;
    this.command = command;
    this.args = args;
    this.oob = oob;
    this.message = commandMessage(command, args, id, oob);
    this.fds = fds?.length ? fds : undefined;
    this.resolve = resolve;
    this.reject = reject;
    this.#timeoutMs = timeoutMs;
    this.#signal = signal;
    if (timeoutMs !== undefined) this.#timer = scheduleTimeout(timeoutMs, this);
    if (signal) watchAbort(signal, this);
  }

  /** Its timeout expired (see `timer_lanes.ts`). */
  timedOut(): void {
    this.#timer = undefined;
    this.#engine.giveUp(
      this,
      new TimeoutError(this.command, this.#timeoutMs!, {
        hint: "the command may still complete in QEMU; its late reply will be ignored",
      }),
    );
  }

  /** Its signal aborted (see `abort_fanout.ts`). */
  aborted(): void {
    this.#engine.giveUp(this, new AbortError(this.command, { cause: this.#signal!.reason }));
  }

  /** Stops its timeout and abort watch; idempotent. */
  cleanup(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    if (this.#signal) unwatchAbort(this.#signal, this);
  }
}

/** What the engine needs from its session. */
export interface CommandHost {
  /** True when oob was negotiated (the in-band window applies). */
  oob(): boolean;
  /** True once the session is closed: the write queue stops. */
  isClosed(): boolean;
  /** Writes to the current transport. */
  write(data: Uint8Array): Promise<number>;
  /**
   * Writes `data` with `fds` attached to its first byte; resolves to the bytes written
   * (0 when the transport cannot carry descriptors: the rest goes through `write`).
   */
  writeWithFds(data: Uint8Array, fds: number[]): Promise<number>;
  /** A write failed. */
  writeFailed(err: unknown): void;
  /** Records a sent message (transcript). */
  sent(message: Record<string, unknown>): void;
  /** Reports a message that could not be routed. */
  warn(err: QmpError): void;
}

const encoder = new TextEncoder();

/** Ids, pending commands, the oob window, timeouts, the write queue and reply routing. */
export class CommandEngine {
  readonly #host: CommandHost;
  readonly #defaultTimeout: number | undefined;
  #nextId = 0;
  /** The pending commands, oldest first (see {@link PendingSet}). */
  #pending = new PendingSet();
  /** Ids given up on (timeout/abort) whose reply has not come yet (kept to redact the reply). */
  #abandoned: Map<number, Pending> | undefined;
  #inbandInFlight = 0;
  /** In-band commands waiting for the window (oob only); created when one has to wait. */
  #inbandQueue: Pending[] | undefined;
  /** Messages waiting for the write in progress; created when one has to wait. */
  #outQueue: Uint8Array[] | undefined;
  /** Descriptors to attach to a queued message's first byte; created with the first one. */
  #outFds: WeakMap<Uint8Array, number[]> | undefined;
  /** The last command carrying fds: the next one waits for its reply. */
  #fdTurn: Promise<unknown> | undefined;
  /** The running write loop, if any. */
  flushing: Promise<void> | undefined;
  /** True while a write chain runs (`flushing` is its promise unless it ended at once). */
  #writing = false;
  /** True once `quit` was written: the peer closing is then expected. */
  quitSent = false;

  constructor(host: CommandHost, defaultTimeout: number | undefined) {
    this.#host = host;
    this.#defaultTimeout = defaultTimeout;
  }

  /** Number of commands awaiting a reply (sent or queued). */
  get size(): number {
    return this.#pending.size;
  }

  /** The command a reply id belongs to, pending or given up on (for redaction). */
  request(id: number): Pending | undefined {
    return this.#pending.get(id) ?? this.#abandoned?.get(id);
  }

  /**
   * Runs `send` (which submits a command carrying fds) once the previous fd-carrying
   * command is answered, so QEMU cannot pair a command with another one's descriptor.
   */
  inFdTurn(send: () => Promise<unknown>): Promise<unknown> {
    const turn = (this.#fdTurn ?? Promise.resolve()).then(send);
    this.#fdTurn = turn.catch(() => {});
    return turn;
  }

  /** Checks the command and its arguments, assigns an id, sends or queues it (with `fds`). */
  submit(
    command: string,
    args: unknown,
    oob: boolean,
    options: ExecuteOptions | undefined,
    fds?: number[],
  ): Promise<unknown> {
    return new Promise((resolve, reject) =>
      this.submitTo(command, args, oob, options, fds, resolve, reject)
    );
  }

  /** {@link submit}, reporting to `resolve` / `reject` instead of a promise of its own. */
  submitTo(
    command: string,
    args: unknown,
    oob: boolean,
    options: ExecuteOptions | undefined,
    fds: number[] | undefined,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
  ): void {
    if (typeof command !== "string" || command === "") {
      reject(
        new QmpValidationError(
          "",
          "",
          `the command name must be a non-empty string; got ${preview(command)}; nothing was sent`,
        ),
      );
      return;
    }
    if (args !== undefined && (typeof args !== "object" || args === null || Array.isArray(args))) {
      // QEMU would answer GenericError "QMP input member 'arguments' must be an object".
      reject(
        new QmpValidationError(
          command,
          "",
          `the arguments must be a JSON object (QEMU refuses anything else), got ${
            preview(args)
          }; nothing was sent`,
        ),
      );
      return;
    }
    const timeoutMs = options?.timeout === undefined
      ? this.#defaultTimeout
      : parseDuration(options.timeout);
    const signal = options?.signal;
    if (signal?.aborted) {
      reject(new AbortError(`${command}`, { cause: signal.reason }));
      return;
    }
    const id = ++this.#nextId;
    const entry = new Pending(
      this,
      id,
      command,
      args,
      oob,
      fds,
      timeoutMs,
      signal,
      resolve,
      reject,
    );
    this.#pending.set(id, entry);
    if (!oob && this.#host.oob() && this.#inbandInFlight >= MAX_INBAND_IN_FLIGHT) {
      (this.#inbandQueue ??= []).push(entry);
    } else {
      this.#send(entry);
    }
  }

  /** A command's timeout expired or its signal aborted: reject it, remember its id if sent. */
  giveUp(entry: Pending, err: QmpError): void {
    if (this.#pending.get(entry.id) !== entry) return;
    this.#pending.delete(entry.id);
    entry.cleanup();
    if (entry.sent) {
      (this.#abandoned ??= new Map()).set(entry.id, entry);
    } else {
      const i = this.#inbandQueue?.indexOf(entry) ?? -1;
      if (i >= 0) this.#inbandQueue!.splice(i, 1);
    }
    entry.reject(err);
  }

  /** Routes a reply (`return` or `error`) to its command; warns about one nobody asked for. */
  route(
    msg:
      | { kind: "return"; id: unknown; value: unknown }
      | { kind: "error"; id: unknown; class: string; desc: string },
    raw: Record<string, unknown>,
  ): void {
    const id = msg.id;
    const entry = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (!entry) {
      this.#unrouted(msg, raw);
      return;
    }
    this.#pending.delete(entry.id);
    entry.cleanup();
    if (!entry.oob) this.#inbandReplied();
    if (msg.kind === "return") {
      entry.resolve(msg.value);
    } else {
      entry.reject(new QmpCommandError(entry.command, entry.args, msg.class, msg.desc));
    }
  }

  /**
   * Settles every pending command and forgets queued writes: `error(entry)`
   * rejects each, except a `quit` when `quitDone` (the close did what it asked).
   */
  failAll(quitDone: boolean, error: (entry: Pending) => ConnectionClosedError): void {
    const pending = this.#pending.values();
    this.#pending.clear();
    this.#inbandQueue = undefined;
    this.#outQueue = undefined;
    this.#abandoned = undefined;
    this.#inbandInFlight = 0;
    for (const entry of pending) {
      entry.cleanup();
      // A quit whose reply was lost to the close still did what it was asked.
      if (entry.command === "quit" && quitDone) entry.resolve({});
      else entry.reject(error(entry));
    }
  }

  #unrouted(
    msg: { kind: "return" | "error"; id: unknown; class?: string; desc?: string },
    raw: Record<string, unknown>,
  ): void {
    const abandoned = typeof msg.id === "number" ? this.#abandoned?.get(msg.id) : undefined;
    if (abandoned !== undefined) {
      const wasOob = abandoned.oob;
      this.#abandoned!.delete(abandoned.id);
      if (!wasOob) this.#inbandReplied();
      return; // late reply to a command that timed out or was aborted
    }
    if (msg.kind === "error" && msg.id === undefined) {
      const err = new ServerParseError(msg.class ?? "GenericError", msg.desc ?? "");
      const sent = this.#pending.values().filter((p) => p.sent);
      if (sent.length === 1) {
        // The only request QEMU was reading is the one it failed to parse.
        const entry = sent[0];
        this.#pending.delete(entry.id);
        entry.cleanup();
        if (!entry.oob) this.#inbandReplied();
        entry.reject(err);
      } else {
        this.#host.warn(err);
      }
      return;
    }
    this.#host.warn(
      new ProtocolError(
        `Discarded a reply with an unknown id ${stringifyJson(msg.id)}: ${
          stringifyJson(raw).slice(0, 120)
        }`,
        { received: stringifyJson(raw).slice(0, 120) },
      ),
    );
  }

  #send(entry: Pending): void {
    let bytes: Uint8Array;
    try {
      bytes = encoder.encode(stringifyJson(entry.message));
    } catch (cause) {
      this.#pending.delete(entry.id);
      entry.cleanup();
      entry.reject(
        new TypeError(`Arguments of ${entry.command} cannot be encoded as JSON`, { cause }),
      );
      return;
    }
    entry.sent = true;
    if (!entry.oob) this.#inbandInFlight++;
    if (entry.command === "quit") this.quitSent = true;
    this.#host.sent(entry.message);
    if (entry.fds) (this.#outFds ??= new WeakMap()).set(bytes, entry.fds);
    if (this.#writing) {
      (this.#outQueue ??= []).push(bytes);
      return;
    }
    // Nothing being written: write this message now, without going through the queue.
    this.#writing = true;
    let chain: Promise<void>;
    if (entry.fds || this.#host.isClosed()) {
      (this.#outQueue ??= []).push(bytes);
      chain = this.#flush();
    } else {
      chain = this.#write(bytes);
    }
    if (this.#writing) this.flushing = chain; // else it ended already (closed, or a write threw)
  }

  /** The write chain ended (queue empty, session closed, or a write failed). */
  #flushed(): void {
    this.#writing = false;
    this.flushing = undefined;
  }

  /**
   * Writes the queued messages until the queue is empty. Without descriptors (the common
   * case) a chain of writes, not an async function: one frame less per command.
   */
  #flush(): Promise<void> {
    if (this.#outFds !== undefined) return this.#flushWithFds();
    const chunks = this.#outQueue;
    if (chunks === undefined || chunks.length === 0 || this.#host.isClosed()) {
      this.#flushed();
      return Promise.resolve();
    }
    this.#outQueue = undefined;
    return this.#write(concatBytes(chunks));
  }

  /** Writes all of `data`, then flushes what was queued meanwhile. */
  #write(data: Uint8Array): Promise<void> {
    let written: Promise<number>;
    try {
      written = this.#host.write(data);
    } catch (err) {
      return Promise.resolve(this.#writeError(err));
    }
    return written.then(
      (n) => n < data.length ? this.#write(data.subarray(n)) : this.#flush(),
      (err) => this.#writeError(err),
    );
  }

  #writeError(err: unknown): void {
    this.#flushed();
    if (!this.#host.isClosed()) this.#host.writeFailed(err);
  }

  async #flushWithFds(): Promise<void> {
    try {
      while (this.#outQueue !== undefined && this.#outQueue.length > 0 && !this.#host.isClosed()) {
        const chunks = this.#outQueue;
        this.#outQueue = undefined;
        const outFds = this.#outFds!;
        // A message with fds starts its own write, so they ride on its first byte.
        for (let i = 0, j = 1; i < chunks.length; i = j, j = i + 1) {
          while (j < chunks.length && !outFds.has(chunks[j])) j++;
          const data = concatBytes(chunks.slice(i, j));
          const fds = outFds.get(chunks[i]);
          let off = 0;
          if (fds) off = await this.#host.writeWithFds(data, fds);
          while (off < data.length) off += await this.#host.write(data.subarray(off));
        }
      }
    } catch (err) {
      if (!this.#host.isClosed()) this.#host.writeFailed(err);
    } finally {
      this.#flushed();
    }
  }

  #inbandReplied(): void {
    this.#inbandInFlight--;
    const queue = this.#inbandQueue;
    while (queue && queue.length > 0 && this.#inbandInFlight < MAX_INBAND_IN_FLIGHT) {
      this.#send(queue.shift()!);
    }
  }
}

/**
 * Pending commands by id, oldest first. Most of the time one command is pending (or
 * none): it sits in a field, and a `Map` is made only when more are in flight, so a
 * sequential caller never adds to or deletes from a map (a `Map` costs ~250 bytes per
 * connection, and each delete allocated), see bench/README.md.
 */
class PendingSet {
  /** The oldest pending command, when it was added while none other was pending. */
  #first: Pending | undefined;
  /** The others, in id order. */
  #more: Map<number, Pending> | undefined;

  get size(): number {
    return (this.#first === undefined ? 0 : 1) + (this.#more?.size ?? 0);
  }

  get(id: number): Pending | undefined {
    return this.#first?.id === id ? this.#first : this.#more?.get(id);
  }

  /** Adds a command with a higher id than every one already in. */
  set(id: number, entry: Pending): void {
    if (this.#first === undefined && !this.#more?.size) this.#first = entry;
    else (this.#more ??= new Map()).set(id, entry);
  }

  delete(id: number): void {
    if (this.#first?.id === id) this.#first = undefined;
    else this.#more?.delete(id);
  }

  clear(): void {
    this.#first = undefined;
    this.#more = undefined;
  }

  /** A copy of the pending commands, oldest first. */
  values(): Pending[] {
    const out = this.#first === undefined ? [] : [this.#first];
    if (this.#more) { for (const p of this.#more.values()) out.push(p); }
    return out;
  }
}

/** A short printable form of a bad value, for messages; never throws. */
function preview(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "an array" : String(value);
  }
  return excerpt(text, 60);
}
