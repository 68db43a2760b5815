/**
 * QMP message shapes and their validation: the greeting, replies and events,
 * independent of any connection (pure functions, testable in memory).
 *
 * @module
 */
import { excerpt } from "./framing.ts";
import { ProtocolError } from "./errors.ts";
import { stringifyJson } from "./json.ts";
import type { QmpTimestamp } from "./qapi/types.ts";

export type { QmpTimestamp };

/** QEMU's version triple, as in the greeting and `query-version`. */
export interface QemuVersionTriple {
  /** Major version, e.g. 7. */
  major: number;
  /** Minor version, e.g. 2. */
  minor: number;
  /** Micro version, e.g. 22. */
  micro: number;
}

/** The greeting QEMU sends when a client connects: `{"QMP": {version, capabilities}}`. */
export interface Greeting {
  /** QEMU's version. */
  version: {
    /** Version numbers. */
    qemu: QemuVersionTriple;
    /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
    package: string;
  };
  /** Capabilities the server offers (`"oob"` is the only one QEMU defines). */
  capabilities: string[];
}

/**
 * An asynchronous event from QEMU. `data` is `undefined` for events without a payload.
 *
 * Events a client receives compute `time` on first read (an accessor: a flood of events
 * does not pay for a `Date` each). `JSON.stringify`, `console.log` and the runner's
 * `expect` show and compare it as before, with the other fields; spreading (`{ ...ev }`),
 * `Object.keys`, `structuredClone` and prototype-checking deep equality (`node:assert`'s
 * `deepStrictEqual` against a plain object) see only the own fields `event`, `data`,
 * `timestamp` and `seq`.
 */
export interface QmpEvent<N extends string = string, D = unknown> {
  /** Event name, e.g. `STOP`, `SHUTDOWN`. */
  event: N;
  /** The payload; `undefined` when QEMU sent none (STOP, RESUME, POWERDOWN). */
  data: D;
  /** QEMU's timestamp. */
  timestamp: QmpTimestamp;
  /**
   * The timestamp as a `Date` (the same object on every read), or `undefined` when QEMU
   * sent -1 (clock unavailable).
   */
  time: Date | undefined;
  /** Sequence number of the event on its connection, starting at 1 (see `QmpClient.mark()`). */
  seq: number;
}

/** A classified message from the server. */
export type ServerMessage =
  | { kind: "return"; id: unknown; value: unknown }
  | { kind: "error"; id: unknown; class: string; desc: string }
  | { kind: "event"; event: string; data: unknown; timestamp: QmpTimestamp };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(msg: unknown): string {
  return excerpt(stringifyJson(msg) ?? String(msg), 120);
}

/**
 * Validates the first message of a session. Throws a {@link ProtocolError}
 * naming what arrived when it is not a QMP greeting (e.g. a QEMU guest agent,
 * an HMP monitor, or another service on that address).
 */
export function parseGreeting(msg: unknown): Greeting {
  const qmp = isObject(msg) ? msg.QMP : undefined;
  const version = isObject(qmp) ? qmp.version : undefined;
  const qemu = isObject(version) ? version.qemu : undefined;
  const caps = isObject(qmp) ? qmp.capabilities : undefined;
  if (
    !isObject(qmp) || !isObject(version) || !isObject(qemu) || !Array.isArray(caps) ||
    typeof qemu.major !== "number" || typeof qemu.minor !== "number" ||
    typeof qemu.micro !== "number" || !caps.every((c) => typeof c === "string")
  ) {
    throw new ProtocolError(
      `Expected a QMP greeting {"QMP": {"version": ..., "capabilities": [...]}} but received ${
        show(msg)
      }. Is the address a QMP monitor (-qmp or -mon mode=control), not HMP or the guest agent?`,
      { received: show(msg) },
    );
  }
  return {
    version: {
      qemu: { major: qemu.major, minor: qemu.minor, micro: qemu.micro },
      package: typeof version.package === "string" ? version.package : "",
    },
    capabilities: caps as string[],
  };
}

/** Classifies a server message as a return, an error or an event; throws {@link ProtocolError} otherwise. */
export function classifyMessage(msg: Record<string, unknown>): ServerMessage {
  if ("return" in msg) return { kind: "return", id: msg.id, value: msg.return };
  if ("error" in msg) {
    const err = msg.error;
    if (isObject(err)) {
      return {
        kind: "error",
        id: msg.id,
        class: typeof err.class === "string" ? err.class : "GenericError",
        desc: typeof err.desc === "string" ? err.desc : stringifyJson(err),
      };
    }
  } else if (typeof msg.event === "string") {
    const ts = isObject(msg.timestamp) ? msg.timestamp : {};
    return {
      kind: "event",
      event: msg.event,
      data: msg.data,
      timestamp: {
        seconds: typeof ts.seconds === "number" ? ts.seconds : -1,
        microseconds: typeof ts.microseconds === "number" ? ts.microseconds : -1,
      },
    };
  }
  throw new ProtocolError(
    `Received a message that is neither a reply nor an event: ${show(msg)}`,
    { received: show(msg) },
  );
}

/** True when `msg` is an event (classified as one by {@link classifyMessage}). */
export function isEventMessage(msg: Record<string, unknown>): boolean {
  return typeof msg.event === "string" && !("return" in msg) && !("error" in msg);
}

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/**
 * A received event. Its `time` is computed from `timestamp` on first read and kept: a
 * `Date` costs more than the rest of the event, and most readers never look at it.
 * JSON and `console.log` show `time` like the plain object they replace.
 */
class ReceivedEvent implements QmpEvent {
  event: string;
  data: unknown;
  timestamp: QmpTimestamp;
  seq: number;
  /** `null` until `time` is first read. */
  #time: Date | undefined | null = null;

  constructor(event: string, data: unknown, timestamp: QmpTimestamp, seq: number) {
    this.event = event;
    this.data = data;
    this.timestamp = timestamp;
    this.seq = seq;
  }

  get time(): Date | undefined {
    if (this.#time === null) this.#time = timestampToDate(this.timestamp);
    return this.#time;
  }

  set time(value: Date | undefined) {
    this.#time = value;
  }

  /** The plain object, with `time`, in the order events always had. */
  plain(): QmpEvent {
    const { event, data, timestamp, seq } = this;
    return { event, data, timestamp, time: this.time, seq };
  }

  toJSON(): QmpEvent {
    return this.plain();
  }

  [INSPECT](
    depth: number,
    options: Record<string, unknown>,
    inspect: (value: unknown, options: unknown) => string,
  ): string {
    return inspect(this.plain(), { ...options, depth });
  }
}

/**
 * A received event as the plain object events were before `time` became lazy
 * (`time` an own property), for code that compares or walks objects by their
 * own keys and prototype (the runner's `toEqual` and value formatting);
 * `undefined` for any other value.
 */
export function plainEvent(value: unknown): QmpEvent | undefined {
  return value instanceof ReceivedEvent ? value.plain() : undefined;
}

/**
 * Builds the event numbered `seq` from a message that {@link isEventMessage} accepted. A
 * missing or malformed timestamp field reads -1, as QEMU sends when it has no clock.
 */
export function eventFromMessage(msg: Record<string, unknown>, seq: number): QmpEvent {
  const ts = msg.timestamp as Record<string, unknown> | null | undefined;
  const seconds = typeof ts === "object" && ts !== null ? ts.seconds : undefined;
  const microseconds = typeof ts === "object" && ts !== null ? ts.microseconds : undefined;
  return new ReceivedEvent(msg.event as string, msg.data, {
    seconds: typeof seconds === "number" ? seconds : -1,
    microseconds: typeof microseconds === "number" ? microseconds : -1,
  }, seq);
}

/** Converts a QMP timestamp to a `Date`; `undefined` when QEMU sent -1 (no clock). */
export function timestampToDate(ts: QmpTimestamp): Date | undefined {
  if (ts.seconds < 0 || ts.microseconds < 0) return undefined;
  return new Date(ts.seconds * 1000 + Math.floor(ts.microseconds / 1000));
}

/** Builds the wire form of a command. Arguments are omitted when `undefined`. */
export function commandMessage(
  command: string,
  args: unknown,
  id: number,
  oob: boolean,
): Record<string, unknown> {
  const msg: Record<string, unknown> = oob ? { "exec-oob": command } : { execute: command };
  if (args !== undefined) msg.arguments = args;
  msg.id = id;
  return msg;
}
