/**
 * The event objects a client hands out: `time` computed on first read (no `Date` per
 * event on a flood), yet JSON, inspection and readers see what the plain objects showed.
 * In memory: no permissions.
 */
import assert from "node:assert/strict";
import { inspect } from "node:util";
import { eventFromMessage, type QmpEvent } from "../lib/protocol.ts";
import { equals, expect } from "../lib/runner/expect.ts";
import { diffValues, formatShort, formatValue } from "../lib/runner/format.ts";
import { openMemoryClient } from "./helpers/memory_transport.ts";

/** What events were before `time` became lazy: a plain object with a `Date` in it. */
function plain(
  event: string,
  data: unknown,
  timestamp: { seconds: number; microseconds: number },
  seq: number,
): QmpEvent {
  const time = timestamp.seconds < 0 || timestamp.microseconds < 0
    ? undefined
    : new Date(timestamp.seconds * 1000 + Math.floor(timestamp.microseconds / 1000));
  return { event, data, timestamp, time, seq };
}

/** Swaps the global `Date` for a subclass that counts constructions; returns the count and undo. */
function swapDate(): { count(): number; restore(): void } {
  const RealDate = globalThis.Date;
  let dates = 0;
  class CountingDate extends RealDate {
    constructor(...args: ConstructorParameters<DateConstructor>) {
      super(...args);
      dates++;
    }
  }
  globalThis.Date = CountingDate as DateConstructor;
  return { count: () => dates, restore: () => (globalThis.Date = RealDate) };
}

/** Counts `new Date(...)` while `body` runs. */
function countDates<T>(body: () => T): { result: T; dates: number } {
  const swap = swapDate();
  try {
    return { result: body(), dates: swap.count() };
  } finally {
    swap.restore();
  }
}

Deno.test("event: time is the timestamp as a Date, built on first read and kept", () => {
  const ts = { seconds: 1_700_000_000, microseconds: 123_999 };
  const { result: events, dates: built } = countDates(() =>
    Array.from({ length: 10 }, (_, i) => eventFromMessage({ event: "STOP", timestamp: ts }, i + 1))
  );
  assert.equal(built, 0, "no Date while events are built");
  const { result: time, dates } = countDates(() => events[3].time);
  assert.equal(dates, 1);
  assert.ok(time instanceof Date);
  assert.equal(time.getTime(), 1_700_000_000_123);
  assert.equal(countDates(() => events[3].time).dates, 0, "the second read reuses it");
  assert.equal(events[3].time, time, "the same Date object on every read");
  assert.notEqual(events[4].time, time, "each event has its own Date");
});

Deno.test("event: -1, missing or malformed timestamps give time undefined", () => {
  const cases: [unknown, { seconds: number; microseconds: number }][] = [
    [{ seconds: -1, microseconds: -1 }, { seconds: -1, microseconds: -1 }],
    [{ seconds: 5, microseconds: -1 }, { seconds: 5, microseconds: -1 }],
    [undefined, { seconds: -1, microseconds: -1 }],
    [null, { seconds: -1, microseconds: -1 }],
    [[1, 2], { seconds: -1, microseconds: -1 }],
    [{ seconds: "5", microseconds: 1n }, { seconds: -1, microseconds: -1 }],
  ];
  for (const [timestamp, expected] of cases) {
    const ev = eventFromMessage({ event: "X", timestamp }, 1);
    assert.deepEqual(ev.timestamp, expected, `timestamp ${inspect(timestamp)}`);
    assert.equal(ev.time, undefined, `timestamp ${inspect(timestamp)}`);
  }
});

Deno.test("event: time can be assigned, as on a plain object", () => {
  const ev = eventFromMessage({ event: "X", timestamp: { seconds: 1, microseconds: 0 } }, 1);
  const d = new Date(42);
  ev.time = d;
  assert.equal(ev.time, d);
  ev.time = undefined;
  assert.equal(ev.time, undefined);
  assert.equal(
    JSON.stringify(ev),
    JSON.stringify({ ...plain("X", undefined, ev.timestamp, 1), time: undefined }),
  );
});

Deno.test("event: JSON.stringify and inspection show what the plain object showed", () => {
  const cases = [
    plain("RESET", { guest: false, reason: "host-qmp-system-reset" }, {
      seconds: 1_700_000_000,
      microseconds: 500_123,
    }, 7),
    plain("STOP", undefined, { seconds: 1_700_000_001, microseconds: 0 }, 8),
    plain("X", { deep: { a: { b: { c: [1, 2, 3] } } } }, { seconds: -1, microseconds: -1 }, 9),
  ];
  for (const want of cases) {
    const msg: Record<string, unknown> = { event: want.event, timestamp: want.timestamp };
    if (want.data !== undefined) msg.data = want.data;
    const ev = eventFromMessage(msg, want.seq);
    assert.equal(JSON.stringify(ev), JSON.stringify(want));
    assert.equal(JSON.stringify(ev, null, 2), JSON.stringify(want, null, 2));
    assert.equal(JSON.stringify([ev, { ev }]), JSON.stringify([want, { ev: want }]));
    for (const depth of [0, 1, 2, 4, Infinity]) {
      for (
        const wrap of [(x: unknown) => x, (x: unknown) => [x], (x: unknown) => ({ a: { b: x } })]
      ) {
        assert.equal(Deno.inspect(wrap(ev), { depth }), Deno.inspect(wrap(want), { depth }));
        assert.equal(inspect(wrap(ev), { depth }), inspect(wrap(want), { depth }));
      }
    }
    assert.equal(Deno.inspect(ev, { colors: true }), Deno.inspect(want, { colors: true }));
    // The own fields, for spread / Object.keys / structuredClone: all but time.
    assert.deepEqual(Object.keys(ev), ["event", "data", "timestamp", "seq"]);
    assert.equal("time" in ev, true);
  }
});

Deno.test("event: through a client, listeners and history get lazy events with the same JSON", async () => {
  const { client, peer } = await openMemoryClient({ address: "mem" });
  const mark = client.mark();
  using all = client.events();
  const ts = { seconds: 1_700_000_000, microseconds: 250_000 };
  peer.send({ event: "STOP", timestamp: ts });
  peer.send({ event: "RESET", data: { guest: true, reason: "guest-reset" }, timestamp: ts });
  peer.send({ event: "RESUME", timestamp: { seconds: -1, microseconds: -1 } });
  const got: QmpEvent[] = [];
  const swap = swapDate();
  try {
    for await (const ev of all) {
      got.push(ev);
      if (got.length === 3) break;
    }
    assert.equal(swap.count(), 0, "no Date made for events nobody asked the time of");
  } finally {
    swap.restore();
  }
  assert.deepEqual(
    got.map((e) => JSON.stringify(e)),
    [
      plain("STOP", undefined, ts, mark + 1),
      plain("RESET", { guest: true, reason: "guest-reset" }, ts, mark + 2),
      plain("RESUME", undefined, { seconds: -1, microseconds: -1 }, mark + 3),
    ].map((e) => JSON.stringify(e)),
  );
  assert.equal(got[0].time?.getTime(), 1_700_000_000_250);
  assert.equal(got[2].time, undefined);
  // The history (since) holds the same objects.
  const again = await client.waitEvent("RESET", { since: mark, timeout: 30 });
  assert.equal(again, got[1]);
  assert.equal(again.time, got[1].time);
  await client.close();
  await peer.done();
});

Deno.test("event: the runner's expect and value formatting treat events as the plain objects", () => {
  const ts = { seconds: 1_700_000_000, microseconds: 1_000 };
  const ev = eventFromMessage({ event: "RESET", data: { guest: false }, timestamp: ts }, 4);
  const want = plain("RESET", { guest: false }, ts, 4);
  assert.ok(equals(ev, want) && equals(want, ev), "toEqual's equality");
  assert.ok(
    equals(ev, eventFromMessage({ event: "RESET", data: { guest: false }, timestamp: ts }, 4)),
  );
  assert.ok(!equals(ev, { ...want, time: new Date(0) }), "time takes part");
  assert.ok(!equals(ev, { ...want, seq: 5 }));
  expect(ev).toEqual(want);
  expect(ev).toMatchObject({ event: "RESET", time: want.time });
  assert.equal(formatValue(ev), formatValue(want));
  assert.equal(formatShort([ev]), formatShort([want]));
  assert.equal(diffValues(want, ev), undefined);
});
