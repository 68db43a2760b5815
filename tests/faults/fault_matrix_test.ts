/**
 * Fault injection: every fault at every point of a session where it means
 * something, against the scriptable fake QMP server (unix socket) and, for
 * TCP resets, a node:net server that sends a real RST.
 *
 * Points: before the greeting, in the middle of the greeting, after
 * negotiation with 5 commands in flight, during a `waitEvent`, and during an
 * `events()` iteration (3 events already consumed).
 *
 * For each case: the promises users hold settle exactly once with the
 * documented typed error (or value), within a bound measured from the moment
 * the server injected the fault; no unhandled rejection; the client ends in
 * the expected state. A table (fault, point, error users see, time to settle)
 * is printed at the end.
 */
import assert from "node:assert/strict";
import { type ClientOptions, connect, type QmpClient } from "../../lib/client.ts";
import {
  AbortError,
  ConnectionClosedError,
  ConnectionError,
  NegotiationError,
  ProtocolError,
  QmpCommandError,
  type QmpError,
  TimeoutError,
} from "../../lib/errors.ts";
import { type FakeConn, qemuGreeting, startFakeServer } from "../helpers/fake_server.ts";
import {
  allSettledOnce,
  assertNoUnhandled,
  delay,
  errorHead,
  guardUnhandled,
  printTable,
  type Row,
  track,
  type Tracked,
  unhandled,
  within,
} from "./harness.ts";
import { type ResettableConn, startTcpResetServer } from "./tcp_reset_server.ts";

guardUnhandled();

type Point = "before-greeting" | "mid-greeting" | "in-flight" | "mid-waitEvent" | "mid-events";
type Fault = "garbage" | "truncate+close" | "close" | "reset (RST)" | "stall" | "drip" | "oversize";
type Conn = FakeConn & { reset?: () => void };

const N = 5; // commands in flight
const TIMEOUT = 1000; // connect / command / wait timeouts of the stall cases (ms)
const LONG = 5000; // timeouts of the other cases: far above their settle bound
const FAST = 1000; // settle bound of every fault that is not a stall (ms)
const MAX_MESSAGE = 64 * 1024;
const GREETING = JSON.stringify(qemuGreeting()) + "\r\n";
// Cut between members, outside any string: '{"QMP":{"version":{"qemu":{"micro":22,' (depth 4).
const HALF_GREETING = GREETING.slice(0, GREETING.indexOf('"minor"'));
// Bytes that are not JSON: invalid UTF-8, a NUL, and braces that close any open object.
const GARBAGE = new Uint8Array([
  0xff,
  0xfe,
  0x00,
  ...new TextEncoder().encode("garbage}}}}{{\r\n"),
]);
const enc = new TextEncoder();

const rows: Row[] = [];

function line(msg: unknown): string {
  return JSON.stringify(msg) + "\r\n";
}

function jobEvent(n: number): Record<string, unknown> {
  return {
    event: "JOB_STATUS_CHANGE",
    data: { id: `job${n}`, status: "running" },
    timestamp: { seconds: 1700000000, microseconds: n },
  };
}

/** A one-shot signal from the client side to the server script. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

/** Writes `text` one byte per write, yielding between bytes. */
async function drip(c: Conn, text: string): Promise<void> {
  for (const b of enc.encode(text)) {
    await c.write(new Uint8Array([b]));
    await delay(0);
  }
}

/** What the server has received by the time the fault is injected. */
interface ServerState {
  requests: Record<string, unknown>[];
}

/** Brings the session to `point`; returns the requests received so far. */
async function prelude(c: Conn, point: Point, ready: Promise<void>): Promise<ServerState> {
  const requests: Record<string, unknown>[] = [];
  switch (point) {
    case "before-greeting":
      await delay(50); // connected, and waiting for the greeting
      break;
    case "mid-greeting":
      await c.write(HALF_GREETING);
      break;
    case "in-flight":
      await c.handshake();
      for (let i = 0; i < N; i++) requests.push(await c.recv());
      break;
    case "mid-waitEvent":
      await c.handshake();
      requests.push(await c.recv()); // "stop": its STOP event and reply never come
      break;
    case "mid-events":
      await c.handshake();
      requests.push(await c.recv()); // the trigger: never answered
      for (let i = 0; i < 3; i++) await c.send(jobEvent(i));
      break;
  }
  await ready; // the client reached the point (e.g. consumed the 3 events)
  return { requests };
}

/** The message the server would naturally send next at `point` (for truncation, stalls). */
function nextText(point: Point, st: ServerState): string {
  switch (point) {
    case "before-greeting":
      return GREETING;
    case "mid-greeting":
      return GREETING.slice(HALF_GREETING.length);
    case "in-flight":
      return line({
        return: { status: "running", singlestep: false, running: true },
        id: st.requests[0].id,
      });
    case "mid-waitEvent":
      return line({ event: "STOP", timestamp: { seconds: 1700000000, microseconds: 0 } });
    case "mid-events":
      return line(jobEvent(3));
  }
}

/** The rest of a healthy session after `point`, dripped one byte at a time. */
async function dripRest(c: Conn, point: Point, st: ServerState): Promise<void> {
  switch (point) {
    case "before-greeting":
    case "mid-greeting": {
      await drip(c, nextText(point, st));
      const neg = await c.recv();
      await drip(c, line({ return: {}, id: neg.id }));
      break;
    }
    case "in-flight":
      for (const [i, req] of st.requests.entries()) {
        await drip(c, line({ return: { n: i }, id: req.id }));
      }
      break;
    case "mid-waitEvent":
      await drip(c, nextText(point, st));
      await drip(c, line({ return: {}, id: st.requests[0].id }));
      break;
    case "mid-events":
      for (let i = 3; i < 6; i++) await drip(c, line(jobEvent(i)));
      await drip(c, line({ return: { n: 0 }, id: st.requests[0].id }));
      break;
  }
}

/** Streams an endless message (it never ends) until the client hangs up or 8× the limit. */
async function endless(c: Conn, point: Point): Promise<void> {
  const head = point === "before-greeting"
    ? '{"QMP": {"padding": "'
    : point === "mid-greeting"
    ? '"padding": "'
    : point === "in-flight"
    ? '{"return": "'
    : '{"event": "STOP", "data": {"padding": "';
  await c.write(head);
  const chunk = enc.encode("x".repeat(16 * 1024));
  for (let sent = 0; sent < 8 * MAX_MESSAGE; sent += chunk.length) await c.write(chunk);
}

/** Injects `fault`; `mark()` records the injection time. */
async function inject(
  c: Conn,
  fault: Fault,
  point: Point,
  st: ServerState,
  mark: () => void,
): Promise<void> {
  mark();
  switch (fault) {
    case "garbage":
      await c.write(GARBAGE);
      break;
    case "truncate+close": {
      const text = nextText(point, st);
      await c.write(text.slice(0, Math.floor(text.length / 2)));
      c.close();
      return;
    }
    case "close":
      c.close();
      return;
    case "reset (RST)":
      c.reset!();
      return;
    case "stall": {
      const text = nextText(point, st);
      await c.write(text.slice(0, Math.floor(text.length / 2)));
      break; // and never another byte
    }
    case "drip":
      await dripRest(c, point, st);
      break;
    case "oversize":
      await endless(c, point).catch(() => {}); // the client hangs up mid-stream
      return;
  }
  await c.eof;
}

/** What one tracked promise must end with. */
interface Expect {
  /** The error class, or `"value"` for a resolution. */
  cls: (abstract new (...a: never[]) => Error) | "value";
  /** ConnectionClosedError's `reason`. */
  reason?: ConnectionClosedError["reason"];
  /** Class or `name` of the error's cause (`"ConnectionReset"` proves a real RST). */
  cause?: (abstract new (...a: never[]) => Error) | string;
  /** Matched against the message (of the cause when `cause` is set, else of the error). */
  match?: RegExp;
}

interface Case {
  fault: Fault;
  point: Point;
  /** Expected outcome of every tracked promise. */
  expect: Expect;
  /** Expected outcome of the events() consumer (mid-events only), when it differs. */
  consumer?: Expect;
}

const PROTO = (match: RegExp): Expect => ({
  cls: ConnectionClosedError,
  reason: "error",
  cause: ProtocolError,
  match,
});
const NOT_JSON = /bytes that are not JSON/;
const TRUNC = /ended in the middle of a message/;
const BIG = new RegExp(`larger than the ${MAX_MESSAGE}-byte limit`);
const PEER: Expect = { cls: ConnectionClosedError, reason: "peer" };
const RST: Expect = {
  cls: ConnectionClosedError,
  reason: "peer",
  cause: "ConnectionReset",
  match: /reset/i,
};
const TIMED_OUT: Expect = { cls: TimeoutError, match: /did not complete within 1s/ };

const CASES: Case[] = [
  { fault: "garbage", point: "before-greeting", expect: { cls: ProtocolError, match: NOT_JSON } },
  {
    fault: "garbage",
    point: "mid-greeting",
    expect: { cls: ProtocolError, match: /not valid UTF-8/ },
  },
  { fault: "garbage", point: "in-flight", expect: PROTO(NOT_JSON) },
  { fault: "garbage", point: "mid-waitEvent", expect: PROTO(NOT_JSON) },
  { fault: "garbage", point: "mid-events", expect: PROTO(NOT_JSON) },

  { fault: "truncate+close", point: "mid-greeting", expect: { cls: ProtocolError, match: TRUNC } },
  { fault: "truncate+close", point: "in-flight", expect: PROTO(TRUNC) },
  { fault: "truncate+close", point: "mid-waitEvent", expect: PROTO(TRUNC) },
  { fault: "truncate+close", point: "mid-events", expect: PROTO(TRUNC) },

  {
    fault: "close",
    point: "before-greeting",
    expect: { cls: ConnectionClosedError, reason: "peer", match: /^No QMP greeting/ },
  },
  { fault: "close", point: "in-flight", expect: PEER },
  { fault: "close", point: "mid-waitEvent", expect: PEER },
  { fault: "close", point: "mid-events", expect: PEER },

  // A reset that races Deno's connect() itself fails it as ConnectionError (the base class).
  { fault: "reset (RST)", point: "before-greeting", expect: { ...RST, cls: ConnectionError } },
  { fault: "reset (RST)", point: "mid-greeting", expect: RST },
  { fault: "reset (RST)", point: "in-flight", expect: RST },
  { fault: "reset (RST)", point: "mid-waitEvent", expect: RST },
  { fault: "reset (RST)", point: "mid-events", expect: RST },

  {
    fault: "stall",
    point: "before-greeting",
    expect: { cls: TimeoutError, match: /Connecting to .* within 1s.*greeting/ },
  },
  {
    fault: "stall",
    point: "mid-greeting",
    expect: { cls: TimeoutError, match: /Connecting to .* within 1s.*greeting/ },
  },
  { fault: "stall", point: "in-flight", expect: TIMED_OUT },
  { fault: "stall", point: "mid-waitEvent", expect: TIMED_OUT },
  {
    fault: "stall",
    point: "mid-events",
    expect: TIMED_OUT,
    consumer: { cls: AbortError, match: /Event listener was aborted/ },
  },

  { fault: "drip", point: "before-greeting", expect: { cls: "value" } },
  { fault: "drip", point: "mid-greeting", expect: { cls: "value" } },
  { fault: "drip", point: "in-flight", expect: { cls: "value" } },
  { fault: "drip", point: "mid-waitEvent", expect: { cls: "value" } },
  { fault: "drip", point: "mid-events", expect: { cls: "value" } },

  { fault: "oversize", point: "before-greeting", expect: { cls: ProtocolError, match: BIG } },
  { fault: "oversize", point: "mid-greeting", expect: { cls: ProtocolError, match: BIG } },
  { fault: "oversize", point: "in-flight", expect: PROTO(BIG) },
  { fault: "oversize", point: "mid-waitEvent", expect: PROTO(BIG) },
  { fault: "oversize", point: "mid-events", expect: PROTO(BIG) },
];

function checkOutcome(t: Tracked, e: Expect): void {
  if (e.cls === "value") {
    assert.equal(t.outcome, "resolved", `${t.label}: ${errorHead(t.error)}`);
    return;
  }
  assert.equal(t.outcome, "rejected", `${t.label} resolved with ${JSON.stringify(t.value)}`);
  const err = t.error;
  assert.ok(err instanceof e.cls, `${t.label}: expected ${e.cls.name}, got ${errorHead(err)}`);
  if (e.reason && (e.cls === ConnectionClosedError || err instanceof ConnectionClosedError)) {
    assert.ok(err instanceof ConnectionClosedError);
    assert.equal(err.reason, e.reason, `${t.label}: reason`);
  }
  let subject: unknown = err;
  if (e.cause !== undefined) {
    const cause = (err as Error).cause;
    if (typeof e.cause === "string") {
      assert.equal((cause as Error | undefined)?.name, e.cause, `${t.label}: cause ${cause}`);
    } else {
      assert.ok(cause instanceof e.cause, `${t.label}: cause ${errorHead(cause)}`);
    }
    subject = cause;
  } else if (e.reason === "peer" && !e.match) {
    // A plain EOF: nothing underneath.
    assert.equal((err as Error).cause, undefined, `${t.label}: unexpected cause`);
  }
  if (e.match) assert.match((subject as Error).message, e.match, t.label);
}

/** The error users see, for the table: class, reason, message head, cause class. */
function seen(t: Tracked): string {
  if (t.outcome === "resolved") {
    return t.label === "connect" ? "none: connected" : `none: resolved ${JSON.stringify(t.value)}`;
  }
  const e = t.error as Error;
  const reason = e instanceof ConnectionClosedError ? `(${e.reason})` : "";
  const msg = e.message
    .replace(/(unix|tcp):[^\s)]+?(?=[\s)]|$)/g, "<addr>")
    .replace(/\s+/g, " ");
  const cause = e.cause instanceof Error ? ` ← ${e.cause.name}` : "";
  const head = msg.length > 80 ? `${msg.slice(0, 79)}…` : msg;
  return `${e.name}${reason}: ${head}${cause}`;
}

Deno.test("the unhandled-rejection guard catches a deliberate one", async () => {
  const before = unhandled.length;
  void Promise.reject(new Error("deliberately unhandled"));
  await delay(0);
  await delay(0);
  assert.equal(unhandled.length, before + 1);
  assert.match(String(unhandled.pop()), /deliberately unhandled/);
  await assertNoUnhandled();
});

for (const c of CASES) {
  Deno.test(`fault ${c.fault} @ ${c.point}`, async () => {
    const tcp = c.fault === "reset (RST)";
    const stall = c.fault === "stall";
    const timeout = stall ? TIMEOUT : LONG;
    const ready = gate();
    let faultAt = 0;
    const script = async (conn: Conn) => {
      const st = await prelude(conn, c.point, ready.opened);
      await inject(conn, c.fault, c.point, st, () => (faultAt = performance.now()));
    };
    await using server = tcp
      ? await startTcpResetServer(script as (conn: ResettableConn) => Promise<void>)
      : await startFakeServer(script);
    const warnings: QmpError[] = [];
    const options: ClientOptions & { timeout: number } = {
      timeout,
      commandTimeout: timeout,
      maxMessageSize: MAX_MESSAGE,
      onWarning: (w) => warnings.push(w),
    };

    const tracked: Tracked[] = [];
    let client: QmpClient | undefined;
    let consumer: Tracked | undefined;
    const consumed: string[] = [];
    let abortTimer: ReturnType<typeof setTimeout> | undefined;
    try {
      if (c.point === "before-greeting" || c.point === "mid-greeting") {
        const p = connect(server.address, options);
        tracked.push(track("connect", p));
        ready.open();
        await within(tracked[0].promise, timeout + 3000, "connect");
        if (tracked[0].outcome === "resolved") client = tracked[0].value as QmpClient;
      } else {
        client = await connect(server.address, options);
        if (c.point === "in-flight") {
          for (let i = 0; i < N; i++) {
            tracked.push(track(`query-status#${i}`, client.execute("query-status")));
          }
          ready.open();
        } else if (c.point === "mid-waitEvent") {
          tracked.push(track("waitEvent(STOP)", client.waitEvent("STOP", { timeout })));
          tracked.push(track("stop", client.execute("stop")));
          ready.open();
        } else {
          // Stall: the iteration itself has no timeout; users bound it with a signal.
          const ac = new AbortController();
          if (stall) abortTimer = setTimeout(() => ac.abort(new Error("test deadline")), timeout);
          const events = client.events({ bufferSize: 1000, signal: ac.signal });
          const loop = (async () => {
            for await (const ev of events) {
              consumed.push((ev.data as { id: string }).id);
              if (consumed.length === 3) ready.open();
              if (consumed.length === 6) break; // the drip case: 3 more arrived
            }
            return consumed.length;
          })();
          consumer = track("events() iteration", loop);
          tracked.push(consumer);
          tracked.push(track("query-status", client.execute("query-status")));
        }
      }
      const last = await allSettledOnce(tracked, timeout + 3000);
      const settleMs = Math.round(last - faultAt);

      for (const t of tracked) {
        checkOutcome(t, t === consumer && c.consumer ? c.consumer : c.expect);
      }
      if (stall) {
        // The timers start when the call is made, a little before the stall begins.
        assert.ok(
          settleMs >= TIMEOUT - 300 && settleMs < TIMEOUT + 1500,
          `stall settled after ${settleMs} ms, expected ≈${TIMEOUT}`,
        );
      } else if (c.fault === "drip") {
        assert.ok(settleMs < LONG, `the drip took ${settleMs} ms`);
      } else {
        assert.ok(settleMs < FAST, `settled ${settleMs} ms after the fault (bound ${FAST})`);
      }
      if (c.point === "mid-events") {
        assert.deepEqual(
          consumed,
          c.fault === "drip"
            ? ["job0", "job1", "job2", "job3", "job4", "job5"]
            : ["job0", "job1", "job2"],
          "events consumed before the fault are all delivered, in order",
        );
      }
      if (client) {
        if (c.fault === "stall" || c.fault === "drip") {
          assert.equal(client.state, "open", "timeouts do not close the connection");
        } else {
          await within(client.closed, 2000, "client.closed");
          assert.equal(client.state, "closed");
          assert.equal(client.closeError?.reason, c.expect.reason);
        }
        assert.equal(client.pendingCommands, 0, "nothing left pending");
      }
      assert.deepEqual(warnings.map((w) => w.message), [], "no warnings");
      rows.push({
        fault: c.fault === "stall" && c.point === "before-greeting"
          ? "stall (= no greeting at all)"
          : c.fault,
        point: c.point,
        "error users see (class(reason): message head ← cause)": seen(tracked.at(-1)!),
        "settle ms": settleMs,
      });
      if (consumer) {
        rows.push({
          fault: "",
          point: "  └ events()",
          "error users see (class(reason): message head ← cause)": seen(consumer),
          "settle ms": Math.round(consumer.at! - faultAt),
        });
      }
    } finally {
      clearTimeout(abortTimer);
      await client?.close();
    }
    await assertNoUnhandled();
  });
}

// ------------------------------------------------------------- id anomalies

Deno.test("fault unknown-id replies @ in-flight: warned, every command gets its own reply", async () => {
  let faultAt = 0;
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const reqs = [];
    for (let i = 0; i < N; i++) reqs.push(await c.recv());
    faultAt = performance.now();
    await c.send({ return: { bogus: true }, id: 9999 });
    await c.send({ return: {}, id: "abc" });
    await c.send({ error: { class: "GenericError", desc: "who?" }, id: 12345 });
    for (const [i, r] of reqs.entries()) await c.reply(r, { n: i });
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await connect(server.address, {
    timeout: LONG,
    commandTimeout: LONG,
    onWarning: (w) => warnings.push(w),
  });
  const tracked = Array.from(
    { length: N },
    (_, i) => track(`cmd#${i}`, client.executeRaw("query-status")),
  );
  const settleMs = Math.round(await allSettledOnce(tracked, LONG) - faultAt);
  assert.deepEqual(tracked.map((t) => t.value), tracked.map((_, i) => ({ n: i })));
  assert.deepEqual(
    warnings.map((w) => [w.name, /unknown id (\S+):/.exec(w.message)?.[1]]),
    [["ProtocolError", "9999"], ["ProtocolError", '"abc"'], ["ProtocolError", "12345"]],
  );
  assert.equal(client.state, "open");
  assert.ok(settleMs < FAST, `${settleMs} ms`);
  rows.push({
    fault: 'unknown id (9999, "abc", error 12345)',
    point: "in-flight",
    "error users see (class(reason): message head ← cause)":
      `none: 5 commands resolved; onWarning: ${errorHead(warnings[0], 60)}`,
    "settle ms": settleMs,
  });
  await assertNoUnhandled();
});

Deno.test("fault duplicate-id replies @ in-flight (oob on): second reply ignored and warned", async () => {
  let faultAt = 0;
  let maxOutstanding = 0;
  await using server = await startFakeServer(async (c) => {
    await c.handshake(["oob"]);
    const reqs = [];
    for (let i = 0; i < N; i++) reqs.push(await c.recv());
    faultAt = performance.now();
    // cmd#0 answered twice (second with another value); cmd#1 an error, then a return.
    await c.reply(reqs[0], { n: 0 });
    await c.reply(reqs[0], { n: "duplicate" });
    await c.send({ error: { class: "GenericError", desc: "first" }, id: reqs[1].id });
    await c.reply(reqs[1], { n: "duplicate" });
    for (let i = 2; i < N; i++) await c.reply(reqs[i], { n: i });
    await c.reply(reqs[N - 1], { n: "duplicate" });
    // Then 20 more: the in-band window (8 with oob) must not have been widened.
    const outstanding: Record<string, unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      outstanding.push(await c.recv());
      maxOutstanding = Math.max(maxOutstanding, outstanding.length);
      if (outstanding.length === 8 || i === 19) {
        await delay(30); // a widened window would send a 9th now
        while (outstanding.length) await c.reply(outstanding.shift()!, { late: true });
      }
    }
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await connect(server.address, {
    timeout: LONG,
    commandTimeout: LONG,
    oob: true,
    onWarning: (w) => warnings.push(w),
  });
  const tracked = Array.from(
    { length: N },
    (_, i) => track(`cmd#${i}`, client.executeRaw("query-status")),
  );
  const settleMs = Math.round(await allSettledOnce(tracked, LONG) - faultAt);
  assert.deepEqual(tracked[0].value, { n: 0 });
  assert.ok(tracked[1].error instanceof QmpCommandError);
  assert.equal(tracked[1].error.desc, "first");
  assert.deepEqual(tracked.slice(2).map((t) => t.value), [{ n: 2 }, { n: 3 }, { n: 4 }]);
  assert.deepEqual(
    warnings.map((w) => /unknown id (\d+)/.exec(w.message)?.[1]),
    ["2", "3", String(N + 1)],
    "each duplicate warned once, naming its id (ids 2..6: 1 was qmp_capabilities)",
  );
  const more = Array.from({ length: 20 }, () => client.executeRaw("query-status"));
  assert.equal((await within(Promise.all(more), LONG, "20 more")).length, 20);
  assert.equal(maxOutstanding, 8, "in-band window still 8 after the duplicates");
  rows.push({
    fault: "duplicate id (return×2, error+return)",
    point: "in-flight",
    "error users see (class(reason): message head ← cause)": `first reply wins; onWarning: ${
      errorHead(warnings[0], 60)
    }`,
    "settle ms": settleMs,
  });
  await assertNoUnhandled();
});

Deno.test("fault duplicate reply to a timed-out command: late one dropped, duplicate warned", async () => {
  let faultAt = 0;
  await using server = await startFakeServer(async (c) => {
    await c.handshake();
    const slow = await c.recv();
    await delay(150); // after the client's 50 ms timeout
    faultAt = performance.now();
    await c.reply(slow, { late: 1 });
    await c.reply(slow, { late: 2 });
    await c.reply(await c.recv(), { fresh: true });
    await c.eof;
  });
  const warnings: QmpError[] = [];
  await using client = await connect(server.address, {
    timeout: LONG,
    onWarning: (w) => warnings.push(w),
  });
  const slow = track("slow", client.executeRaw("query-status", undefined, { timeout: 50 }));
  await allSettledOnce([slow], LONG);
  assert.ok(slow.error instanceof TimeoutError);
  const fresh = track("fresh", client.executeRaw("query-status"));
  const settleMs = Math.round(await allSettledOnce([fresh], LONG) - faultAt);
  assert.deepEqual(fresh.value, { fresh: true });
  assert.equal(warnings.length, 1, warnings.map((w) => w.message).join("\n"));
  assert.match(warnings[0].message, /unknown id 2: \{"return":\{"late":2\},"id":2\}/);
  rows.push({
    fault: "late reply + duplicate after timeout",
    point: "in-flight",
    "error users see (class(reason): message head ← cause)": `${
      errorHead(slow.error, 50)
    }; duplicate → onWarning`,
    "settle ms": settleMs,
  });
  await assertNoUnhandled();
});

// ---------------------------------------------------------------- greetings

Deno.test("fault greeting with unknown capabilities: works, oob still negotiable", async () => {
  const caps = ["x-future-cap", "oob", "frobnicate"];
  let enabled: unknown;
  await using server = await startFakeServer(async (c) => {
    enabled = (await c.handshake(caps)).arguments;
    const req = await c.recv();
    await c.send({ return: [{ type: "chardev", id: "compat_monitor0" }], id: req.id });
    await c.eof;
  });
  const t0 = performance.now();
  await using client = await connect(server.address, { timeout: LONG, oob: true });
  const ms = Math.round(performance.now() - t0);
  assert.deepEqual(client.greeting.capabilities, caps);
  assert.deepEqual(enabled, { enable: ["oob"] }, "only oob is asked for");
  assert.equal(client.oob, true);
  assert.deepEqual(await client.executeOob("query-yank"), [
    { type: "chardev", id: "compat_monitor0" },
  ]);
  rows.push({
    fault: "unknown capabilities (oob among them) + oob: true",
    point: "greeting",
    "error users see (class(reason): message head ← cause)": "none: connected, oob enabled",
    "settle ms": ms,
  });
  await assertNoUnhandled();
});

Deno.test("fault greeting without oob but oob: true: NegotiationError, nothing sent", async () => {
  const caps = ["x-future-cap"];
  let received: unknown = "nothing";
  await using server = await startFakeServer(async (c) => {
    await c.greet(caps);
    received = await c.recv().catch(() => "nothing");
  });
  const t0 = performance.now();
  const p = track("connect", connect(server.address, { timeout: LONG, oob: true }));
  const ms = Math.round(await allSettledOnce([p], LONG) - t0);
  assert.ok(p.error instanceof NegotiationError, errorHead(p.error));
  assert.match(p.error.message, /oob capability was requested but .* offers only \[x-future-cap\]/);
  await within(server.firstScriptDone, 2000, "server saw the client leave");
  assert.equal(received, "nothing", "qmp_capabilities must not be sent");
  rows.push({
    fault: "unknown capabilities (no oob) + oob: true",
    point: "greeting",
    "error users see (class(reason): message head ← cause)": seen(p),
    "settle ms": ms,
  });
  await assertNoUnhandled();
});

Deno.test("fault unknown capabilities without oob: connects, oob off", async () => {
  await using server = await startFakeServer(async (c) => {
    const req = await c.handshake(["x-future-cap"]);
    assert.equal(req.arguments, undefined, "no enable list");
    await c.eof;
  });
  await using client = await connect(server.address, { timeout: LONG });
  assert.equal(client.oob, false);
  assert.deepEqual(client.greeting.capabilities, ["x-future-cap"]);
  await assertNoUnhandled();
});

Deno.test("fault table", () => {
  printTable("Fault table (fake QMP server; stalls use 1 s timeouts)", rows);
  assert.ok(rows.length >= CASES.length, `${rows.length} rows`);
});
