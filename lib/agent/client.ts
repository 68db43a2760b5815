/**
 * A client for the QEMU guest agent (QGA): `qemu-ga` inside the guest, reached through the
 * host side of its virtio-serial port (a unix or TCP chardev socket).
 *
 * QGA differs from QMP: no greeting, no negotiation, no events, no ids, one command at a time,
 * and the stream may hold leftovers of an earlier client. The client therefore resynchronises
 * with `guest-sync-delimited` (it sends a 0xFF byte to reset the agent's parser, and discards
 * everything up to the 0xFF the agent puts before the matching reply) before its first command
 * and after any timeout, garbage or unexpected reply. When `qemu-ga` is not running the socket
 * does not close, it goes quiet: every wait is bounded, and a timeout says so.
 *
 * @module
 */
import { type Address, formatAddress, parseAddress } from "../address.ts";
import { boundedWait } from "../deadline.ts";
import { concatBytes } from "../bytes.ts";
import { type Duration, parseDuration } from "../duration.ts";
import {
  AbortError,
  ConnectionClosedError,
  ProtocolError,
  QmpError,
  TimeoutError,
} from "../errors.ts";
import { JsonObjectFramer } from "../framing.ts";
import { stringifyJson } from "../json.ts";
import { openTransport, type Transport } from "../transport.ts";
import {
  AGENT_NO_REPLY_COMMANDS,
  type AgentCommandArgs,
  type AgentCommandName,
  type AgentCommandReturn,
  type GuestAgentInfo,
  type GuestExecStatus,
  type GuestNetworkInterface,
  type GuestOSInfo,
} from "../qapi/agent_types.ts";
import {
  AGENT_SILENT_HINT,
  AgentCommandError,
  AgentError,
  AgentExecTimeoutError,
  AgentPortClosedError,
} from "./errors.ts";
import { decodeBase64, encodeBase64 } from "./base64.ts";

/** Default bound of one agent command. */
export const DEFAULT_AGENT_COMMAND_TIMEOUT = "30s";
/** Default largest agent message: 64 MiB (qemu-ga caps exec output at 16 MiB per stream, base64). */
export const DEFAULT_AGENT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024;
/** Default bound of each of `exec()`'s stdout and stderr, in bytes (qemu-ga's own cap: 16 MiB). */
export const DEFAULT_EXEC_MAX_OUTPUT = 16 * 1024 * 1024;
/** Default largest file `readFile()` reads, in bytes. */
export const DEFAULT_READ_FILE_MAX_SIZE = 64 * 1024 * 1024;
/** Chunk size of `readFile()` / `writeFile()`, in bytes. */
export const AGENT_FILE_CHUNK = 1024 * 1024;

/** Options of {@link connectAgent}. */
export interface AgentConnectOptions {
  /** Bound of connecting plus the first resynchronisation (default `"10s"`). */
  timeout?: Duration;
  /** Default bound of each command (default {@link DEFAULT_AGENT_COMMAND_TIMEOUT}). */
  commandTimeout?: Duration;
  /** Cancels connecting. */
  signal?: AbortSignal;
  /** Retry while the socket is missing or refuses connections, until `timeout` (default false). */
  retry?: boolean;
  /**
   * Resynchronise before returning (default true): fails with a {@link TimeoutError} when the
   * agent does not answer. With `false`, the client syncs lazily before its first command; use
   * {@link AgentClient.waitReady} to wait for an agent that is still starting.
   */
  sync?: boolean;
  /** Largest message accepted from the agent (default {@link DEFAULT_AGENT_MAX_MESSAGE_SIZE}). */
  maxMessageSize?: number;
}

/** Bounds of one agent call. */
export interface AgentCallOptions {
  /** Bound of the call (default: the client's `commandTimeout`). */
  timeout?: Duration;
  /** Cancels the wait. The stream is resynchronised before the next command. */
  signal?: AbortSignal;
}

/** `execute()`'s arguments after the command name: args are optional when the command has none required. */
export type AgentExecuteRest<K extends AgentCommandName> = Record<never, never> extends
  AgentCommandArgs<K> ? [args?: AgentCommandArgs<K>, options?: AgentCallOptions]
  : [args: AgentCommandArgs<K>, options?: AgentCallOptions];

/** Options of {@link AgentClient.exec}. */
export interface AgentExecOptions {
  /** Written to the process's stdin. */
  input?: string | Uint8Array;
  /** Environment: `{ NAME: "value" }` or `["NAME=value"]`. */
  env?: Record<string, string> | string[];
  /** Bound of the whole run (default `"30s"`). On expiry the process is left running in the guest. */
  timeout?: Duration;
  /** Cancels waiting (the process is left running in the guest). */
  signal?: AbortSignal;
  /** Largest stdout and stderr kept, each, in bytes (default {@link DEFAULT_EXEC_MAX_OUTPUT}). */
  maxOutput?: number;
  /** Capture stdout/stderr (default true). */
  captureOutput?: boolean;
}

/** The outcome of {@link AgentClient.exec}. */
export interface AgentExecResult {
  /** The guest process id. */
  pid: number;
  /** The exit code, or `null` when a signal ended the process. */
  exitCode: number | null;
  /** The signal number that ended the process, when one did. */
  signal?: number;
  /** Standard output, decoded as UTF-8 (invalid bytes replaced). */
  stdout: string;
  /** Standard error, decoded as UTF-8 (invalid bytes replaced). */
  stderr: string;
  /** Standard output, raw. */
  stdoutBytes: Uint8Array;
  /** Standard error, raw. */
  stderrBytes: Uint8Array;
  /** True when stdout was cut (by qemu-ga's 16 MiB cap or by `maxOutput`). */
  stdoutTruncated: boolean;
  /** True when stderr was cut. */
  stderrTruncated: boolean;
}

/** Options of {@link AgentClient.readFile}. */
export interface AgentReadFileOptions extends AgentCallOptions {
  /** Fail with {@link AgentError} when the file is larger (default {@link DEFAULT_READ_FILE_MAX_SIZE}). */
  maxSize?: number;
}

/** Options of {@link AgentClient.writeFile}. */
export interface AgentWriteFileOptions extends AgentCallOptions {
  /** Append instead of truncating (default false). */
  append?: boolean;
}

/** Options of {@link AgentClient.freeze}. */
export interface AgentFreezeOptions extends AgentCallOptions {
  /** Freeze only these mount points (default: all). */
  mountpoints?: string[];
}

/** Frozen guest filesystems; thaw with {@link AgentFreeze.thaw} or `await using`. */
export interface AgentFreeze extends AsyncDisposable {
  /** How many filesystems were frozen. */
  readonly count: number;
  /** Thaws (once; later calls return the first result). Resolves to the number thawed. */
  thaw(options?: AgentCallOptions): Promise<number>;
}

/** The minimal QMP client {@link AgentClient.shutdown} needs to wait for the VM's event. */
export interface ShutdownEventSource {
  /** Waits for a QMP event (as {@link QmpClient.waitEvent}). */
  waitEvent(
    name: "SHUTDOWN" | "RESET",
    options?: { timeout?: Duration; signal?: AbortSignal },
  ): Promise<unknown>;
}

/** Options of {@link AgentClient.shutdown}. */
export interface AgentShutdownOptions {
  /** `"powerdown"` (default), `"halt"` or `"reboot"`. */
  mode?: "powerdown" | "halt" | "reboot";
  /**
   * A QMP client of the same VM: resolve when its `SHUTDOWN` event arrives (`RESET` or
   * `SHUTDOWN` for `"reboot"`). Without it, resolve once the agent accepted the command.
   */
  qmp?: ShutdownEventSource;
  /** Bound of the whole call, including waiting for the event (default `"60s"`). */
  timeout?: Duration;
  /**
   * How long to wait for an error reply before taking silence as success (default `"1s"`):
   * `guest-shutdown` sends no reply when it succeeds.
   */
  replyWait?: Duration;
  /** Cancels waiting. */
  signal?: AbortSignal;
}

/** Options of {@link AgentClient.waitReady}. */
export interface AgentWaitReadyOptions {
  /** Bound of the whole wait (default `"60s"`). */
  timeout?: Duration;
  /** Cancels the wait. */
  signal?: AbortSignal;
  /** Bound of each attempt (default `"1s"`). */
  attempt?: Duration;
}

type Item =
  | { kind: "message"; message: Record<string, unknown> }
  | { kind: "delimiter" }
  | { kind: "garbage"; error: ProtocolError };

const MAX_QUEUED_ITEMS = 1024;
const NO_REPLY_WAIT_MS = 1000;
const SYNC_DELIMITER = 0xff;

/**
 * A connection to a guest agent. Commands run one at a time (calls queue). Create with
 * {@link connectAgent}; close with {@link AgentClient.close} or `await using`.
 *
 * @example
 * ```ts ignore
 * await using agent = await connectAgent("unix:/run/vm1/qga.sock");
 * const { exitCode, stdout } = await agent.exec("/bin/uname", ["-r"]);
 * const hosts = new TextDecoder().decode(await agent.readFile("/etc/hosts"));
 * await agent.execute("guest-ping");
 * ```
 */
export class AgentClient implements AsyncDisposable {
  readonly #transport: Transport;
  readonly #where: string;
  readonly #commandTimeout: number;
  readonly #maxMessageSize: number;
  #framer: JsonObjectFramer;
  #framerBroken = false;
  #items: Item[] = [];
  #wake: (() => void) | undefined;
  #ended: ConnectionClosedError | undefined;
  #closedByClient = false;
  #portClosed: string | undefined;
  #transportClosed = false;
  #needSync = true;
  #lock: Promise<unknown> = Promise.resolve();
  #pendingWrite: Promise<unknown> | undefined;
  readonly #pump: Promise<void>;

  /**
   * Wraps an open transport. Prefer {@link connectAgent}; `where` names the peer in messages.
   */
  constructor(
    transport: Transport,
    options: { where?: string; commandTimeout?: Duration; maxMessageSize?: number } = {},
  ) {
    this.#transport = transport;
    this.#where = options.where ?? "the guest agent";
    this.#commandTimeout = parseDuration(options.commandTimeout ?? DEFAULT_AGENT_COMMAND_TIMEOUT);
    this.#maxMessageSize = options.maxMessageSize ?? DEFAULT_AGENT_MAX_MESSAGE_SIZE;
    this.#framer = new JsonObjectFramer({ maxMessageSize: this.#maxMessageSize });
    this.#pump = this.#readLoop();
  }

  /** Where the agent is, e.g. `unix:/run/vm1/qga.sock`. */
  get address(): string {
    return this.#where;
  }

  /** True once the connection is closed (by either side). */
  get closed(): boolean {
    return this.#ended !== undefined;
  }

  /**
   * Runs an agent command, typed from QGA's schema. Rejects with {@link AgentCommandError} on
   * an error reply, {@link TimeoutError} (hint: is qemu-ga running?) when the agent is silent,
   * {@link ConnectionClosedError} when the connection ends.
   */
  execute<K extends AgentCommandName>(
    command: K,
    ...rest: AgentExecuteRest<K>
  ): Promise<AgentCommandReturn<K>> {
    const [args, options] = rest;
    return this.executeRaw(command, args, options) as Promise<AgentCommandReturn<K>>;
  }

  /**
   * Runs any command by name, untyped (for names not in the generated schema). Commands that send
   * no reply on success ({@link AGENT_NO_REPLY_COMMANDS}: `guest-shutdown`, `guest-suspend-*`)
   * resolve to `undefined` once one second passes without an error reply.
   */
  executeRaw(command: string, args?: unknown, options: AgentCallOptions = {}): Promise<unknown> {
    if ((AGENT_NO_REPLY_COMMANDS as readonly string[]).includes(command)) {
      return this.#exclusive(() =>
        this.#callNoReply(command, args, { ...options, replyWait: NO_REPLY_WAIT_MS })
      );
    }
    return this.#exclusive(() => this.#call(command, args, options));
  }

  /**
   * Resynchronises the stream now (`guest-sync-delimited`), discarding stale data. Commands do
   * this themselves when needed.
   */
  sync(options: AgentCallOptions = {}): Promise<void> {
    return this.#exclusive(() => this.#sync(options));
  }

  /**
   * Waits until the agent answers, retrying `guest-sync-delimited` (each attempt bounded by
   * `attempt`) until `timeout`: for a guest that is still booting.
   */
  waitReady(options: AgentWaitReadyOptions = {}): Promise<void> {
    const total = parseDuration(options.timeout ?? "60s");
    const attempt = parseDuration(options.attempt ?? "1s");
    const deadline = Date.now() + total;
    return this.#exclusive(async () => {
      let last: unknown;
      while (true) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw new TimeoutError(`Waiting for the guest agent at ${this.#where}`, total, {
            hint: AGENT_SILENT_HINT,
            cause: last,
          });
        }
        try {
          await this.#sync(
            { timeout: Math.min(attempt, remaining), signal: options.signal },
            false, // waiting for qemu-ga to (re)open its port is the point
          );
          this.#portClosed = undefined; // it answered: it is back
          return;
        } catch (err) {
          if (!(err instanceof TimeoutError)) throw err;
          last = err;
        }
      }
    });
  }

  /** `guest-ping`. */
  async ping(options?: AgentCallOptions): Promise<void> {
    await this.execute("guest-ping", undefined, options);
  }

  /** `guest-info`: the agent's version and its commands (with `enabled`). */
  info(options?: AgentCallOptions): Promise<GuestAgentInfo> {
    return this.execute("guest-info", undefined, options);
  }

  /** `guest-get-osinfo`: the guest OS (kernel release, distribution, ...). */
  osInfo(options?: AgentCallOptions): Promise<GuestOSInfo> {
    return this.execute("guest-get-osinfo", undefined, options);
  }

  /** `guest-network-get-interfaces`: the guest's NICs with MAC and IP addresses. */
  networkInterfaces(options?: AgentCallOptions): Promise<GuestNetworkInterface[]> {
    return this.execute("guest-network-get-interfaces", undefined, options);
  }

  /**
   * Runs a program in the guest and waits for it to exit (`guest-exec`, then `guest-exec-status`
   * polled with backoff). Output is bounded by `maxOutput` per stream; truncation is reported.
   * A non-zero exit is a result, not an error. When `timeout` expires, rejects with
   * {@link AgentExecTimeoutError} and the process is left running in the guest.
   *
   * @example
   * ```ts ignore
   * const r = await agent.exec("/bin/sh", ["-c", "cat; echo done >&2"], { input: "hi" });
   * // { exitCode: 0, stdout: "hi", stderr: "done\n", ... }
   * ```
   */
  async exec(
    path: string,
    args: string[] = [],
    options: AgentExecOptions = {},
  ): Promise<AgentExecResult> {
    const timeoutMs = parseDuration(options.timeout ?? "30s");
    const deadline = Date.now() + timeoutMs;
    const maxOutput = options.maxOutput ?? DEFAULT_EXEC_MAX_OUTPUT;
    const env = Array.isArray(options.env)
      ? options.env
      : options.env && Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
    const input = options.input === undefined ? undefined : encodeBase64(
      typeof options.input === "string" ? new TextEncoder().encode(options.input) : options.input,
    );
    const callBound = () => ({
      timeout: Math.max(1, Math.min(this.#commandTimeout, deadline - Date.now())),
      signal: options.signal,
    });
    const pid = Number(
      (await this.execute("guest-exec", {
        path,
        arg: args,
        ...(env ? { env } : {}),
        ...(input !== undefined ? { "input-data": input } : {}),
        "capture-output": options.captureOutput ?? true,
      }, callBound())).pid,
    ); // a guest pid: small, never a bigint
    let delay = 5;
    let status: GuestExecStatus;
    while (true) {
      try {
        status = await this.execute("guest-exec-status", { pid }, callBound());
      } catch (err) {
        if (err instanceof TimeoutError && Date.now() >= deadline) {
          throw new AgentExecTimeoutError(path, pid, timeoutMs, { cause: err });
        }
        throw err;
      }
      if (status.exited) break;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new AgentExecTimeoutError(path, pid, timeoutMs);
      await sleep(Math.min(delay, remaining), options.signal, `Waiting for guest process ${pid}`);
      delay = Math.min(delay * 2, 250);
    }
    const out = bounded(status["out-data"], maxOutput);
    const err = bounded(status["err-data"], maxOutput);
    const text = new TextDecoder();
    return {
      pid,
      exitCode: status.exitcode === undefined ? null : Number(status.exitcode),
      ...(status.signal !== undefined ? { signal: Number(status.signal) } : {}),
      stdout: text.decode(out.bytes),
      stderr: text.decode(err.bytes),
      stdoutBytes: out.bytes,
      stderrBytes: err.bytes,
      stdoutTruncated: out.cut || status["out-truncated"] === true,
      stderrTruncated: err.cut || status["err-truncated"] === true,
    };
  }

  /**
   * Reads a whole guest file (`guest-file-open`/`-read`/`-close`, in chunks; the handle is always
   * closed). A missing file rejects with {@link AgentCommandError} (`GenericError`).
   */
  async readFile(path: string, options: AgentReadFileOptions = {}): Promise<Uint8Array> {
    const maxSize = options.maxSize ?? DEFAULT_READ_FILE_MAX_SIZE;
    return await this.#withFile(path, "r", options, async (handle) => {
      const chunks: Uint8Array[] = [];
      let size = 0;
      while (true) {
        const r = await this.execute(
          "guest-file-read",
          { handle, count: AGENT_FILE_CHUNK },
          options,
        );
        const bytes = decodeBase64(r["buf-b64"]);
        size += bytes.length;
        if (size > maxSize) {
          throw new AgentError(
            `guest file ${path} is larger than maxSize (${maxSize} bytes); raise maxSize or read it with exec()`,
          );
        }
        if (bytes.length) chunks.push(bytes);
        if (r.eof || r.count === 0) break;
      }
      return concatBytes(chunks, size);
    });
  }

  /** Reads a guest file as UTF-8 text. */
  async readTextFile(path: string, options?: AgentReadFileOptions): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path, options));
  }

  /**
   * Writes (or with `append`, appends) a guest file in chunks; the handle is always closed.
   * Strings are written as UTF-8.
   */
  async writeFile(
    path: string,
    data: Uint8Array | string,
    options: AgentWriteFileOptions = {},
  ): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.#withFile(path, options.append ? "a" : "w", options, async (handle) => {
      let offset = 0;
      while (offset < bytes.length) {
        const chunk = bytes.subarray(offset, offset + AGENT_FILE_CHUNK);
        const r = await this.execute(
          "guest-file-write",
          { handle, "buf-b64": encodeBase64(chunk), count: chunk.length },
          options,
        );
        if (!(r.count > 0)) {
          throw new AgentError(`guest-file-write wrote nothing to ${path} at offset ${offset}`);
        }
        offset += Number(r.count);
      }
    });
  }

  /**
   * Freezes guest filesystems (`guest-fsfreeze-freeze`, or `-freeze-list` with `mountpoints`) and
   * returns a handle that thaws them; `await using` thaws at scope exit.
   *
   * @example
   * ```ts ignore
   * {
   *   await using _frozen = await agent.freeze();
   *   await qmp.execute("blockdev-snapshot-sync", { ... });
   * } // thawed here
   * ```
   */
  async freeze(options: AgentFreezeOptions = {}): Promise<AgentFreeze> {
    const count = Number(
      options.mountpoints
        ? await this.execute("guest-fsfreeze-freeze-list", {
          mountpoints: options.mountpoints,
        }, options)
        : await this.execute("guest-fsfreeze-freeze", undefined, options),
    );
    let thawed: Promise<number> | undefined;
    const thaw = (o?: AgentCallOptions) =>
      thawed ??= this.execute("guest-fsfreeze-thaw", undefined, o).then(Number);
    return {
      count,
      thaw,
      [Symbol.asyncDispose]: async () => {
        await thaw();
      },
    };
  }

  /**
   * Shuts the guest down through the agent (`guest-shutdown`), which sends no reply when it
   * succeeds: an error reply rejects with {@link AgentCommandError}; silence for `replyWait`, or
   * the connection closing, counts as accepted. With `qmp`, resolves when the VM's `SHUTDOWN`
   * (or, for reboot, `RESET`) event arrives. The stream is resynchronised before the next command.
   */
  shutdown(options: AgentShutdownOptions = {}): Promise<void> {
    const mode = options.mode ?? "powerdown";
    const total = parseDuration(options.timeout ?? "60s");
    const replyWait = parseDuration(options.replyWait ?? "1s");
    const deadline = Date.now() + total;
    const stopEvent = new AbortController();
    const signal = options.signal
      ? AbortSignal.any([options.signal, stopEvent.signal])
      : stopEvent.signal;
    const events = options.qmp
      ? (mode === "reboot" ? ["RESET", "SHUTDOWN"] as const : ["SHUTDOWN"] as const).map((name) =>
        options.qmp!.waitEvent(name, { timeout: total, signal })
      )
      : [];
    const event = events.length
      ? Promise.any(events).catch((e: AggregateError) => {
        throw e.errors[0];
      })
      : undefined;
    event?.catch(() => {});
    return this.#exclusive(async () => {
      try {
        await this.#callNoReply("guest-shutdown", { mode }, {
          timeout: this.#commandTimeout,
          signal: options.signal,
          replyWait,
          event,
        });
        if (event) {
          await boundedWait(
            `Waiting for the VM's ${
              mode === "reboot" ? "RESET" : "SHUTDOWN"
            } event after guest-shutdown`,
            { timeout: Math.max(1, deadline - Date.now()), signal: options.signal },
            (resolve, reject) => {
              event.then(() => resolve(undefined), reject);
            },
          );
        }
      } finally {
        stopEvent.abort();
      }
    });
  }

  /**
   * Tells the client that qemu-ga closed its port in the guest (QEMU's `VSERPORT_CHANGE` with
   * `open: false`; `launch({ agent: true })` calls this). The host socket stays open in that case,
   * so only this makes a pending call fail at once (with {@link AgentPortClosedError} carrying
   * `reason`) instead of timing out. Later calls fail the same way until {@link portOpened};
   * {@link waitReady} waits for the agent to come back. The stream is resynchronised next time.
   */
  portClosed(reason: string): void {
    this.#portClosed = reason;
    this.#needSync = true;
    this.#wake?.();
  }

  /** Tells the client that qemu-ga (re)opened its port: calls are allowed again (after a resync). */
  portOpened(): void {
    this.#portClosed = undefined;
    this.#needSync = true;
  }

  /** The reason given to {@link portClosed} while the port is closed, else `undefined`. */
  get portClosedReason(): string | undefined {
    return this.#portClosed;
  }

  /** Closes the connection; pending and later calls reject with {@link ConnectionClosedError}. */
  async close(): Promise<void> {
    if (!this.#ended) {
      this.#closedByClient = true;
      this.#end(
        new ConnectionClosedError(`The agent connection to ${this.#where} is closed`, {
          address: this.#where,
          reason: "client",
        }),
      );
    }
    this.#closeTransport();
    await this.#pump;
  }

  /** Closes the connection (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ------------------------------------------------------------------------------------------

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => {});
    return run;
  }

  #checkPort(what: string): void {
    if (this.#ended) throw this.#ended;
    if (this.#portClosed !== undefined) throw new AgentPortClosedError(what, this.#portClosed);
  }

  async #call(command: string, args: unknown, options: AgentCallOptions): Promise<unknown> {
    this.#checkPort(`guest agent command ${command}`);
    const timeout = parseDuration(options.timeout ?? this.#commandTimeout);
    if (this.#needSync || this.#items.length > 0) await this.#sync({ ...options, timeout });
    await this.#send(stringifyJson(request(command, args)), { timeout, signal: options.signal });
    let skipNext = false;
    while (true) {
      const item = await this.#next(`guest agent command ${command}`, timeout, options.signal);
      if (item.kind === "delimiter") {
        // Our own guest-sync-delimited's reply follows, or else a stale one: skip that.
        skipNext = command !== "guest-sync-delimited";
        continue;
      }
      if (item.kind === "garbage") {
        this.#needSync = true;
        throw new ProtocolError(
          `The guest agent at ${this.#where} sent data that is not JSON while ${command} was pending ` +
            `(${item.error.message}); the stream is resynchronised before the next command`,
          { cause: item.error, received: item.error.received },
        );
      }
      if (skipNext) {
        skipNext = false;
        continue;
      }
      return this.#interpret(command, args, item.message);
    }
  }

  #interpret(command: string, args: unknown, m: Record<string, unknown>): unknown {
    if ("return" in m) return m.return;
    const error = m.error as { class?: unknown; desc?: unknown } | undefined;
    if (error && typeof error === "object") {
      throw new AgentCommandError(
        command,
        args,
        String(error.class ?? "GenericError"),
        String(error.desc ?? "(no description)"),
      );
    }
    this.#needSync = true;
    throw new ProtocolError(
      `The guest agent at ${this.#where} answered ${command} with neither "return" nor "error"`,
      { received: stringifyJson(m).slice(0, 200) },
    );
  }

  async #callNoReply(
    command: string,
    args: unknown,
    options: AgentCallOptions & { replyWait: number; event?: Promise<unknown> },
  ): Promise<unknown> {
    this.#checkPort(`guest agent command ${command}`);
    const timeout = parseDuration(options.timeout ?? this.#commandTimeout);
    if (this.#needSync || this.#items.length > 0) await this.#sync({ ...options, timeout });
    this.#needSync = true; // no reply on success: resync before the next command
    await this.#send(stringifyJson(request(command, args)), { timeout, signal: options.signal });
    return await this.#replyOrSilence(
      command,
      args,
      options.replyWait,
      options.event,
      options.signal,
    );
  }

  async #replyOrSilence(
    command: string,
    args: unknown,
    wait: number,
    event: Promise<unknown> | undefined,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const stop = new AbortController();
    event?.then(() => stop.abort(), () => {});
    const s = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    while (true) {
      let item: Item;
      try {
        item = await this.#next(command, wait, s);
      } catch (err) {
        // Silence, the connection closing, or the VM's event: the command was accepted.
        if (err instanceof TimeoutError || err instanceof ConnectionClosedError) return undefined;
        if (err instanceof AbortError && stop.signal.aborted && !signal?.aborted) return undefined;
        throw err;
      }
      if (item.kind === "message") {
        try {
          return this.#interpret(command, args, item.message);
        } finally {
          this.#needSync = true;
        }
      }
    }
  }

  async #sync(options: AgentCallOptions, portSensitive = true): Promise<void> {
    const timeout = parseDuration(options.timeout ?? this.#commandTimeout);
    const id = randomId();
    this.#items.length = 0;
    this.#needSync = true;
    const json = new TextEncoder().encode(
      JSON.stringify({ execute: "guest-sync-delimited", arguments: { id } }),
    );
    const bytes = new Uint8Array(json.length + 1);
    bytes[0] = SYNC_DELIMITER; // resets the agent's JSON parser
    bytes.set(json, 1);
    const what = `Synchronising with the guest agent at ${this.#where} (guest-sync-delimited)`;
    await this.#send(bytes, { timeout, signal: options.signal, what });
    const deadline = Date.now() + timeout;
    let afterDelimiter = false;
    while (true) {
      const remaining = deadline - Date.now();
      const item = await this.#next(
        what,
        Math.max(0, remaining),
        options.signal,
        timeout,
        portSensitive,
      );
      if (item.kind === "delimiter") afterDelimiter = true;
      else if (item.kind === "message") {
        if (afterDelimiter && item.message.return === id) {
          this.#needSync = false;
          return;
        }
        afterDelimiter = false;
      }
    }
  }

  async #send(
    data: string | Uint8Array,
    options: { timeout: number; signal?: AbortSignal; what?: string },
  ): Promise<void> {
    if (this.#ended) throw this.#ended;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const what = options.what ?? `Writing to the guest agent at ${this.#where}`;
    if (this.#pendingWrite) {
      // An earlier write timed out and is still blocked: the agent is not reading.
      await boundedWait(what, options, (resolve, reject) => {
        this.#pendingWrite!.then(resolve, reject);
      }, { hint: () => AGENT_SILENT_HINT, onGiveUp: () => this.#needSync = true });
    }
    const write = (async () => {
      let off = 0;
      while (off < bytes.length) off += await this.#transport.write(bytes.subarray(off));
    })();
    this.#pendingWrite = write;
    write.then(() => {
      if (this.#pendingWrite === write) this.#pendingWrite = undefined;
    }, () => {});
    try {
      await boundedWait(what, options, (resolve, reject) => {
        write.then(resolve, reject);
      }, { hint: () => AGENT_SILENT_HINT, onGiveUp: () => this.#needSync = true });
    } catch (err) {
      if (this.#ended) throw this.#ended;
      if (err instanceof QmpError) throw err;
      throw new ConnectionClosedError(`Writing to the guest agent at ${this.#where} failed`, {
        address: this.#where,
        cause: err,
      });
    }
  }

  /** Waits for the next item; on timeout or abort the stream needs a resync. */
  #next(
    what: string,
    timeout: number,
    signal?: AbortSignal,
    reported = timeout,
    portSensitive = true,
  ): Promise<Item> {
    return boundedWait<Item>(what, { signal }, (resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new TimeoutError(what, reported, { hint: AGENT_SILENT_HINT }));
      }, timeout);
      const check = () => {
        const item = this.#items.shift();
        if (item) resolve(item);
        else if (this.#ended) reject(this.#ended);
        else if (portSensitive && this.#portClosed !== undefined) {
          this.#needSync = true;
          reject(new AgentPortClosedError(what, this.#portClosed));
        } else {
          this.#wake = check;
          return;
        }
        this.#wake = undefined;
      };
      check();
      return () => {
        clearTimeout(timer);
        if (this.#wake === check) this.#wake = undefined;
      };
    }, { onGiveUp: () => this.#needSync = true }).catch((err) => {
      if (err instanceof TimeoutError) this.#needSync = true;
      throw err;
    });
  }

  #push(item: Item): void {
    if (this.#items.length >= MAX_QUEUED_ITEMS) this.#items.shift();
    this.#items.push(item);
    this.#wake?.();
  }

  #end(error: ConnectionClosedError): void {
    if (this.#ended) return;
    this.#ended = error;
    this.#wake?.();
  }

  #closeTransport(): void {
    if (this.#transportClosed) return;
    this.#transportClosed = true;
    try {
      this.#transport.close();
    } catch {
      // already closed
    }
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#transport.read(buf);
        if (n === null) break;
        this.#ingest(buf.subarray(0, n));
      }
      this.#end(
        new ConnectionClosedError(
          `The guest agent at ${this.#where} closed the connection (qemu-ga restarted or the VM went away); connect again`,
          { address: this.#where, reason: "peer" },
        ),
      );
    } catch (err) {
      this.#end(
        new ConnectionClosedError(
          this.#closedByClient
            ? `The agent connection to ${this.#where} is closed`
            : `The connection to the guest agent at ${this.#where} failed: ${
              err instanceof Error ? err.message : String(err)
            }`,
          { address: this.#where, reason: this.#closedByClient ? "client" : "peer", cause: err },
        ),
      );
    } finally {
      this.#closeTransport();
    }
  }

  #ingest(chunk: Uint8Array): void {
    let start = 0;
    while (true) {
      const ff = chunk.indexOf(SYNC_DELIMITER, start);
      const end = ff < 0 ? chunk.length : ff;
      if (end > start) this.#feed(chunk.subarray(start, end));
      if (ff < 0) return;
      // The agent's sentinel: whatever came before is stale; parse afresh.
      this.#framer = new JsonObjectFramer({ maxMessageSize: this.#maxMessageSize });
      this.#framerBroken = false;
      this.#push({ kind: "delimiter" });
      start = ff + 1;
    }
  }

  #feed(bytes: Uint8Array): void {
    if (this.#framerBroken) return; // discard until the next sentinel
    try {
      for (const message of this.#framer.push(bytes)) this.#push({ kind: "message", message });
      if (this.#framer.failure) this.#broken(this.#framer.failure);
    } catch (err) {
      this.#broken(
        err instanceof ProtocolError ? err : new ProtocolError(String(err), { cause: err }),
      );
    }
  }

  #broken(error: ProtocolError): void {
    this.#framerBroken = true;
    this.#push({ kind: "garbage", error });
  }

  async #withFile<T>(
    path: string,
    mode: string,
    options: AgentCallOptions,
    body: (handle: number) => Promise<T>,
  ): Promise<T> {
    const handle = Number(await this.execute("guest-file-open", { path, mode }, options));
    let result: T;
    try {
      result = await body(handle);
    } catch (err) {
      // The first error wins; still release the handle.
      await this.execute("guest-file-close", { handle }, { timeout: this.#commandTimeout })
        .catch(() => {});
      throw err;
    }
    await this.execute("guest-file-close", { handle }, { timeout: this.#commandTimeout });
    return result;
  }
}

/**
 * Connects to a guest agent: `"unix:/path"`, `"tcp:host:port"`, an {@link Address}, or an open
 * {@link Transport}. By default it resynchronises before returning, so a silent agent fails
 * here with a {@link TimeoutError} whose hint asks whether qemu-ga is started in the guest.
 *
 * @example
 * ```ts ignore
 * await using agent = await connectAgent("unix:/tmp/vm/qga.sock", { sync: false });
 * await agent.waitReady({ timeout: "60s" }); // the guest is still booting
 * console.log((await agent.osInfo())["kernel-release"]);
 * ```
 */
export async function connectAgent(
  target: string | Address | Transport,
  options: AgentConnectOptions = {},
): Promise<AgentClient> {
  const timeoutMs = parseDuration(options.timeout ?? "10s");
  let transport: Transport;
  let where: string;
  if (isTransport(target)) {
    transport = target;
    where = "the guest agent";
  } else {
    const address = parseAddress(target);
    where = formatAddress(address);
    transport = await openTransport(address, {
      deadline: Date.now() + timeoutMs,
      timeoutMs,
      signal: options.signal,
      retry: options.retry,
      purpose: "agent",
    });
  }
  const client = new AgentClient(transport, {
    where,
    commandTimeout: options.commandTimeout,
    maxMessageSize: options.maxMessageSize,
  });
  if (options.sync === false) return client;
  try {
    await client.sync({ timeout: timeoutMs, signal: options.signal });
  } catch (err) {
    await client.close();
    throw err;
  }
  return client;
}

function request(command: string, args: unknown): Record<string, unknown> {
  return args === undefined ||
      (typeof args === "object" && args !== null && Object.keys(args).length === 0)
    ? { execute: command }
    : { execute: command, arguments: args };
}

function isTransport(x: unknown): x is Transport {
  return typeof x === "object" && x !== null && typeof (x as Transport).read === "function" &&
    typeof (x as Transport).write === "function";
}

function randomId(): number {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  return (a & 0x1fffff) * 0x100000000 + b; // up to 2^53 - 1: exact in JSON and JS
}

function bounded(b64: string | undefined, max: number): { bytes: Uint8Array; cut: boolean } {
  if (!b64) return { bytes: new Uint8Array(0), cut: false };
  const limitChars = Math.ceil(max / 3) * 4;
  const bytes = decodeBase64(b64.length > limitChars ? b64.slice(0, limitChars) : b64);
  if (bytes.length > max || b64.length > limitChars) {
    return { bytes: bytes.subarray(0, max), cut: true };
  }
  return { bytes, cut: false };
}

function sleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
  return boundedWait<void>(what, { signal }, (resolve) => {
    const t = setTimeout(resolve, ms);
    return () => clearTimeout(t);
  });
}
