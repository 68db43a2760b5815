/**
 * Exact integers (issue 12, item 1), in memory: integers beyond 2^53 from the
 * wire arrive as exact bigints, smaller ones and floats stay numbers, bigints
 * are sent digit for digit, and nothing that re-serializes a message (the
 * transcript, the runner's record file and reporters, the CLI's output) rounds,
 * throws, or turns a non-finite number into null.
 */
import assert from "node:assert/strict";
import { QmpClient } from "../lib/client.ts";
import { JsonObjectFramer } from "../lib/framing.ts";
import { bytesMayHoldLongInteger, parseJson, stringifyJson } from "../lib/json.ts";
import { QmpSchema } from "../lib/qapi/schema.ts";
import { REDACTED, redactMessage } from "../lib/redact.ts";
import { formatTranscriptLine } from "../lib/runner/report_text.ts";
import { parseArgsJson, parseJsonCommand, parseValue } from "../scripts/cli/args.ts";
import { toJson } from "../scripts/cli/common.ts";
import { memoryPair } from "./helpers/memory_transport.ts";

const enc = new TextEncoder();

/** QEMU's own bytes for the values of issue 12 (qom-get lbr-fmt, int64 min, 2^53 + 1). */
const WIRE = '{"return": {"lbr-fmt": 18446744073709551552, "min": -9223372036854775808, ' +
  '"bw": 9007199254740993, "max": 9007199254740991, "small": 42, "neg": -7, "zero": 0, ' +
  '"f": 0.5, "g": 0.10000000000000001, "e": 1e20, "big-float": 1234567890123456789.5, ' +
  '"s": "18446744073709551552"}, "id": 1}';

const EXPECTED = {
  "lbr-fmt": 18446744073709551552n,
  min: -9223372036854775808n,
  bw: 9007199254740993n,
  max: 9007199254740991,
  small: 42,
  neg: -7,
  zero: 0,
  f: 0.5,
  g: 0.1,
  e: 1e20,
  "big-float": 1234567890123456789.5,
  s: "18446744073709551552",
};

function frame(text: string, chunk?: number): Record<string, unknown>[] {
  const framer = new JsonObjectFramer();
  const bytes = enc.encode(text);
  if (chunk === undefined) return framer.push(bytes);
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < bytes.length; i += chunk) {
    out.push(...framer.push(bytes.subarray(i, i + chunk)));
  }
  return out;
}

Deno.test("exact integers: the framer parses integers beyond 2^53 as exact bigints", () => {
  // Fast path (whole CRLF lines), and the byte scan (message split across chunks).
  for (const out of [frame(WIRE + "\r\n"), frame(WIRE + "\r\n", 7), frame(WIRE)]) {
    assert.equal(out.length, 1);
    assert.deepEqual(out[0].return, EXPECTED);
    assert.equal(typeof (out[0].return as Record<string, unknown>).small, "number");
    const r = out[0].return as Record<string, unknown>;
    assert.equal(typeof r["lbr-fmt"], "bigint");
    assert.equal(String(r["lbr-fmt"]), "18446744073709551552");
    assert.equal(String(r.min), "-9223372036854775808");
    assert.equal(String(r.bw), "9007199254740993");
  }
});

Deno.test("exact integers: lines with and without long integers in one read", () => {
  const out = frame(`{"a": 1}\r\n${WIRE}\r\n{"b": 12345678901234567}\r\n{"c": 2.5}\r\n`);
  assert.deepEqual(out, [{ a: 1 }, { return: EXPECTED, id: 1 }, { b: 12345678901234567n }, {
    c: 2.5,
  }]);
});

Deno.test("exact integers: small integers and floats stay numbers; the safe range's edges", () => {
  const r = parseJson(
    "[9007199254740991, -9007199254740991, 9007199254740992, -9007199254740992, " +
      "1234567890123456, 0.5, 1e300, -0, 12345678901234567.0, 12345678901234567e0]",
  );
  assert.deepEqual(r, [
    9007199254740991,
    -9007199254740991,
    9007199254740992n,
    -9007199254740992n,
    1234567890123456,
    0.5,
    1e300,
    -0,
    12345678901234568, // a float literal: the nearest double, as QEMU's strtod reads it
    12345678901234568,
  ]);
  assert.ok(Object.is(r[7], -0));
  // Messages without long digit runs are JSON.parse's own result (the common, fast path).
  const msg = '{"timestamp": {"seconds": 1732876543, "microseconds": 123456}, "event": "STOP"}';
  assert.deepEqual(parseJson(msg), JSON.parse(msg));
  // A long digit run inside a string is left alone.
  assert.deepEqual(parseJson('{"serial": "123456789012345678901234"}'), {
    serial: "123456789012345678901234",
  });
  // Keys such as __proto__ stay plain own data, also on the slow path.
  const p = parseJson('{"__proto__": {"x": 1}, "n": 18446744073709551615}');
  assert.equal(Object.getPrototypeOf(p), Object.prototype);
  assert.deepEqual(Object.keys(p), ["__proto__", "n"]);
  assert.equal(p.n, 18446744073709551615n);
});

Deno.test("exact integers: 1e400 parses as Infinity and is written back as 1e999, never null", () => {
  const v = parseJson('{"x": 1e400, "y": -1e400}');
  assert.equal(v.x, Infinity);
  assert.equal(v.y, -Infinity);
  assert.equal(stringifyJson(v), '{"x":1e999,"y":-1e999}');
  assert.deepEqual(parseJson(stringifyJson(v)), v, "reads back as the same value");
  assert.throws(() => stringifyJson({ x: NaN }), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /NaN \(member "x"\) cannot be written as JSON/);
    return true;
  });
  // A null that is really null stays null.
  assert.equal(stringifyJson({ a: null, b: "null-co" }), '{"a":null,"b":"null-co"}');
});

Deno.test("exact integers: stringifyJson writes bigints digit for digit, compact or pretty", () => {
  const v = { return: EXPECTED, id: 1 };
  const text = stringifyJson(v);
  assert.match(text, /"lbr-fmt":18446744073709551552,/);
  assert.match(text, /"min":-9223372036854775808,/);
  assert.match(text, /"bw":9007199254740993,/);
  const { e: _e, "big-float": _f, ...exact } = EXPECTED; // doubles beyond 2^53 print as integers
  assert.deepEqual(parseJson(stringifyJson(exact)), exact, "round trip");
  assert.match(
    text,
    /"e":100000000000000000000,"big-float":1234567890123456800,/,
    "as JSON.stringify",
  );
  assert.equal(stringifyJson({ a: [1n, 2] }, 2), '{\n  "a": [\n    1,\n    2\n  ]\n}');
  // Same output as JSON.stringify when there is nothing special.
  const plain = { a: [1, "x", null, true, { b: 0.5 }], c: undefined };
  assert.equal(stringifyJson(plain), JSON.stringify(plain));
  assert.equal(stringifyJson(plain, 2), JSON.stringify(plain, null, 2));
  // Cycles are still reported.
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => stringifyJson(cyclic), TypeError);
});

async function open() {
  const transcript: { direction: string; message: Record<string, unknown> }[] = [];
  const { transport, peer } = memoryPair();
  const client = new QmpClient(transport, {
    address: "mem",
    transcript: (e) => transcript.push({ direction: e.direction, message: e.message }),
  });
  peer.greet();
  const handshake = client.handshake({ timeout: "2s" });
  await peer.acceptNegotiation();
  await handshake;
  return { client, peer, transcript };
}

Deno.test("exact integers: the client returns exact replies and event data", async () => {
  const { client, peer } = await open();
  const events = client.events();
  const result = client.executeRaw("qom-get", {
    path: "/machine/unattached/device[0]",
    property: "lbr-fmt",
  });
  const cmd = await peer.recv();
  peer.send(`{"return": 18446744073709551552, "id": ${JSON.stringify(cmd.id)}}\r\n`);
  assert.equal(await result, 18446744073709551552n);
  peer.send(
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BLOCK_JOB_COMPLETED", ' +
      '"data": {"device": "j0", "len": 18446744073709551615, "offset": 4096}}\r\n',
  );
  const it = events[Symbol.asyncIterator]();
  const ev = (await it.next()).value;
  assert.deepEqual(ev?.data, { device: "j0", len: 18446744073709551615n, offset: 4096 });
  await it.return?.();
  await client.close();
  await peer.done();
});

Deno.test("exact integers: sending a bigint argument writes its exact digits", async () => {
  const { client, peer, transcript } = await open();
  const done = client.execute("migrate-set-parameters", { "max-bandwidth": 9007199254740993n });
  const cmd = await peer.recv();
  assert.deepEqual(cmd.arguments, { "max-bandwidth": 9007199254740993n });
  peer.reply(cmd);
  await done;
  // An ordinary number is still accepted and sent as a number.
  const done2 = client.execute("migrate-set-parameters", { "max-bandwidth": 1024 });
  const cmd2 = await peer.recv();
  assert.deepEqual(cmd2.arguments, { "max-bandwidth": 1024 });
  peer.reply(cmd2);
  await done2;
  // The transcript holds the bigint itself; written out, it keeps every digit.
  const line = formatTranscriptLine({
    time: new Date(0).toISOString(),
    vm: "vm",
    direction: "send",
    message: transcript.filter((t) => t.direction === "send")[1].message,
  }, 1000);
  assert.match(line, /"max-bandwidth":9007199254740993\}/);
  // NaN cannot be sent: a TypeError, nothing written.
  await assert.rejects(
    client.execute("migrate-set-parameters", { "max-bandwidth": NaN }),
    (e: unknown) => e instanceof TypeError && /cannot be encoded as JSON/.test(e.message),
  );
  assert.equal(peer.unread, 0);
  await client.close();
  await peer.done();
});

Deno.test("exact integers: schema validation accepts bigints where QAPI says int", () => {
  const schema = new QmpSchema([
    { name: "c", "meta-type": "command", "arg-type": "1", "ret-type": "0" },
    {
      name: "1",
      "meta-type": "object",
      members: [{ name: "n", type: "int" }, { name: "x", type: "number", default: null }],
    },
    { name: "int", "meta-type": "builtin", "json-type": "int" },
    { name: "number", "meta-type": "builtin", "json-type": "number" },
    { name: "0", "meta-type": "object", members: [] },
  ]);
  assert.equal(schema.validateArguments("c", { n: 18446744073709551615n }), undefined);
  assert.equal(schema.validateArguments("c", { n: -9223372036854775808n, x: 0.5 }), undefined);
  assert.equal(schema.validateArguments("c", { n: 5 }), undefined);
  const bad = schema.validateArguments("c", { n: 1, x: 2n });
  assert.ok(bad, "a QAPI number is a double, not a bigint");
});

Deno.test("exact integers: the CLI reads and prints integers beyond 2^53 exactly", () => {
  assert.equal(parseValue("9007199254740993"), 9007199254740993n);
  assert.equal(parseValue("12"), 12);
  assert.deepEqual(parseArgsJson('{"a": 18446744073709551615}'), { a: 18446744073709551615n });
  assert.deepEqual(
    parseJsonCommand(
      '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 9007199254740993}}',
    ),
    { execute: "migrate-set-parameters", arguments: { "max-bandwidth": 9007199254740993n } },
  );
  assert.deepEqual(parseValue('{"a": [9007199254740993]}'), { a: [9007199254740993n] });
  assert.equal(toJson({ v: 18446744073709551552n }, false), '{"v":18446744073709551552}');
  assert.equal(toJson({ v: 18446744073709551552n }, true), '{\n  "v": 18446744073709551552\n}');
});

Deno.test("exact integers: a secret that parses as a bigint is still redacted", () => {
  const msg = parseJson(
    '{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0", ' +
      '"data": 18446744073709551615, "password": 12345678901234567890}}',
  );
  assert.deepEqual(redactMessage(msg).arguments, {
    "qom-type": "secret",
    id: "s0",
    data: REDACTED,
    password: REDACTED,
  });
});

Deno.test("exact integers: the quick look finds a 16-digit run anywhere, and no shorter one", () => {
  for (let size = 16; size <= 48; size++) {
    for (let at = 0; at + 16 <= size; at++) {
      for (const run of [15, 16, 17]) {
        if (at + run > size) continue;
        const text = " ".repeat(at) + "9".repeat(run) + " ".repeat(size - at - run);
        const found = bytesMayHoldLongInteger(enc.encode(text));
        assert.equal(found, run >= 16, `run of ${run} at ${at} in ${size}`);
        const parsed = parseJson(text);
        assert.equal(typeof parsed, run >= 16 ? "bigint" : "number", `parse: ${run} at ${at}`);
        assert.equal(String(parsed), "9".repeat(run));
      }
    }
  }
});
