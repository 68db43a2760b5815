import assert from "node:assert/strict";
import { JsonObjectFramer } from "../lib/framing.ts";
import { ProtocolError } from "../lib/errors.ts";

const enc = new TextEncoder();

function feed(framer: JsonObjectFramer, ...parts: (string | Uint8Array)[]) {
  const out: unknown[] = [];
  for (const p of parts) out.push(...framer.push(typeof p === "string" ? enc.encode(p) : p));
  return out;
}

Deno.test("framing: several messages in one chunk, CRLF or none", () => {
  const out = feed(new JsonObjectFramer(), '{"a":1}\r\n{"b":2}{"c":3}\n  {"d":4}');
  assert.deepEqual(out, [{ a: 1 }, { b: 2 }, { c: 3 }, { d: 4 }]);
});

Deno.test("framing: a message split at every possible byte", () => {
  const text = '{"return": {"s": "a}b{c\\"d\\\\", "n": [1, {"x": []}]}, "id": 7}\r\n';
  for (let cut = 0; cut <= text.length; cut++) {
    const out = feed(new JsonObjectFramer(), text.slice(0, cut), text.slice(cut));
    assert.deepEqual(out, [{ return: { s: 'a}b{c"d\\', n: [1, { x: [] }] }, id: 7 }], `cut ${cut}`);
  }
});

Deno.test("framing: one byte at a time", () => {
  const text =
    '{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n{"return": {}}';
  const framer = new JsonObjectFramer();
  const out: unknown[] = [];
  for (const b of enc.encode(text)) out.push(...framer.push(new Uint8Array([b])));
  assert.equal(out.length, 2);
  assert.equal(framer.pending, 0);
});

Deno.test("framing: multi-byte UTF-8 split across chunks", () => {
  const bytes = enc.encode('{"s": "é€😀"}');
  for (let cut = 1; cut < bytes.length; cut++) {
    const out = feed(new JsonObjectFramer(), bytes.subarray(0, cut), bytes.subarray(cut));
    assert.deepEqual(out, [{ s: "é€😀" }]);
  }
});

Deno.test("framing: pretty-printed multi-line output", () => {
  const pretty =
    '{\n    "return": {\n        "status": "running",\n        "running": true\n    },\n' +
    '    "id": 1\n}\r\n';
  assert.deepEqual(feed(new JsonObjectFramer(), pretty), [{
    return: { status: "running", running: true },
    id: 1,
  }]);
});

Deno.test("framing: a chunk buffer reused by the caller does not corrupt kept bytes", () => {
  const framer = new JsonObjectFramer();
  const buf = enc.encode('{"a": "xxxx');
  assert.deepEqual(framer.push(buf), []);
  buf.fill(0x20);
  assert.deepEqual(framer.push(enc.encode('"}')), [{ a: "xxxx" }]);
});

Deno.test("framing: garbage bytes are a ProtocolError naming them", () => {
  const framer = new JsonObjectFramer();
  assert.throws(() => feed(framer, "HTTP/1.1 400 Bad Request\r\n"), (e: unknown) => {
    assert.ok(e instanceof ProtocolError);
    assert.match(e.message, /HTTP\/1\.1 400/);
    assert.match(e.message, /not JSON/);
    return true;
  });
  // The framer stays failed.
  assert.throws(() => feed(framer, "{}"), ProtocolError);
});

Deno.test("framing: non-object JSON values are rejected", () => {
  for (const v of ["[1, 2]", '"str"', "42", "null", "true"]) {
    assert.throws(() => feed(new JsonObjectFramer(), v), /not an object/, v);
  }
});

Deno.test("framing: invalid JSON inside braces is a ProtocolError", () => {
  assert.throws(() => feed(new JsonObjectFramer(), "{abc}"), (e: unknown) => {
    assert.ok(e instanceof ProtocolError);
    assert.match(e.message, /invalid JSON: \{abc\}/);
    return true;
  });
});

Deno.test("framing: invalid UTF-8 is a ProtocolError", () => {
  assert.throws(
    () => new JsonObjectFramer().push(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])),
    /not valid UTF-8/,
  );
});

Deno.test("framing: invalid UTF-8 on whole CRLF lines (the fast path) is a ProtocolError", () => {
  // Each invalid sequence decodes leniently to U+FFFD: as many characters as bytes for
  // most, so a length check alone would let them through as "\uFFFD" strings.
  const bad = [[0xff], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [
    0xe2,
    0x82,
  ]];
  const good = enc.encode('{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n');
  for (const seq of bad) {
    const line = new Uint8Array([...enc.encode('{"s": "a'), ...seq, ...enc.encode('b"}\r\n')]);
    // Alone, and after valid lines in the same chunk (those are still returned).
    assert.throws(() => new JsonObjectFramer().push(line), /not valid UTF-8/, `bytes ${seq}`);
    const framer = new JsonObjectFramer();
    const out = framer.push(new Uint8Array([...good, ...good, ...line, ...good]));
    assert.equal(out.length, 2, `bytes ${seq}`);
    assert.match(framer.failure?.message ?? "", /not valid UTF-8/);
    assert.throws(() => framer.push(good), /not valid UTF-8/);
  }
});

Deno.test("framing: a real U+FFFD and other non-ASCII text on CRLF lines parse as sent", () => {
  const framer = new JsonObjectFramer();
  const out = framer.push(enc.encode('{"a": "\uFFFD"}\r\n{"b": "é€"}\r\n{"c": "x"}\r\n'));
  assert.deepEqual(out, [{ a: "\uFFFD" }, { b: "é€" }, { c: "x" }]);
});

Deno.test("framing: oversize messages are rejected, in one chunk or many", () => {
  const big = `{"x": "${"a".repeat(200)}"}`;
  assert.throws(() => feed(new JsonObjectFramer({ maxMessageSize: 100 }), big), /100-byte limit/);
  const framer = new JsonObjectFramer({ maxMessageSize: 100 });
  assert.throws(() => {
    for (let i = 0; i < big.length; i += 10) feed(framer, big.slice(i, i + 10));
  }, /100-byte limit/);
  // An unterminated stream is cut off at the limit, not buffered forever.
  const endless = new JsonObjectFramer({ maxMessageSize: 1000 });
  assert.throws(() => {
    feed(endless, '{"x": "');
    for (let i = 0; i < 1000; i++) feed(endless, "aaaaaaaaaa");
  }, ProtocolError);
  // Exactly at the limit is fine.
  const exact = `{"x": "${"a".repeat(91)}"}`;
  assert.equal(exact.length, 100);
  assert.equal(feed(new JsonObjectFramer({ maxMessageSize: 100 }), exact).length, 1);
});

Deno.test("framing: end() reports a truncated message", () => {
  const framer = new JsonObjectFramer();
  feed(framer, '{"return": {"sta');
  assert.equal(framer.pending, 16);
  assert.throws(() => framer.end(), /middle of a message \(16 bytes/);
  const clean = new JsonObjectFramer();
  feed(clean, '{"a": 1}\r\n');
  clean.end();
});

Deno.test("framing: objects before bad bytes in the same chunk are returned, then the error", () => {
  const framer = new JsonObjectFramer();
  const out = feed(framer, '{"return": {}, "id": 1}\r\n{"event": "STOP"}\r\nGARBAGE');
  assert.deepEqual(out, [{ return: {}, id: 1 }, { event: "STOP" }]);
  assert.ok(framer.failure instanceof ProtocolError);
  assert.match(framer.failure.message, /GARBAGE/);
  assert.throws(() => feed(framer, "{}"), ProtocolError);
  assert.throws(() => framer.end(), ProtocolError);
});
