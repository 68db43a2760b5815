/**
 * QEMU event lines read by hand (lib/event_line.ts): whatever it accepts must be
 * exactly what `JSON.parse` gives for the line, and everything else must be left
 * to `JSON.parse` (and so to the framer's errors). In memory, no permissions.
 */
import assert from "node:assert/strict";
import { parseEventLine } from "../lib/event_line.ts";
import { JsonObjectFramer } from "../lib/framing.ts";
import { ProtocolError } from "../lib/errors.ts";

const enc = new TextEncoder();

/** Same value and same key order (deepEqual ignores order; JSON text does not). */
function assertSame(actual: unknown, expected: unknown, what: string) {
  assert.deepEqual(actual, expected, what);
  assert.equal(JSON.stringify(actual), JSON.stringify(expected), what);
}

/** What the framer makes of one CRLF line, alone and in a chunk between two good lines. */
function frame(line: string): { value?: unknown; error?: ProtocolError } {
  const good = '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n';
  const framer = new JsonObjectFramer();
  try {
    const out = framer.push(enc.encode(good + line + "\r\n" + good));
    if (framer.failure) return { error: framer.failure };
    assert.equal(out.length, 3, `one message from ${line}`);
    assertSame(out[0], JSON.parse(good), "the line before");
    assertSame(out[2], JSON.parse(good), "the line after");
    return { value: out[1] };
  } catch (err) {
    assert.ok(err instanceof ProtocolError, String(err));
    return { error: err };
  }
}

function qemuLine(seconds: number, micro: number, name: string, data?: string): string {
  const head =
    `{"timestamp": {"seconds": ${seconds}, "microseconds": ${micro}}, "event": "${name}"`;
  return data === undefined ? head + "}" : `${head}, "data": ${data}}`;
}

Deno.test("event line: QEMU's form gives what JSON.parse gives, with and without data", () => {
  const datas = [
    undefined,
    '{"guest": false, "reason": "host-qmp-system-reset"}',
    '{"device": "virtio-disk0", "path": "/machine/peripheral/virtio-disk0/virtio-backend"}',
    '{"a": [1, 2.5, -3e2, true, null, {"b": "c\\"}\\\\\\n\\u00e9"}], "x": {}}',
    "[]",
    "null",
    "0",
    '"text"',
    '  {"spaced": 1}  ',
    '{"len": 9007199254740991}',
  ];
  const stamps = [[1_700_000_000, 123_456], [0, 0], [-1, -1], [1, 999_999], [
    999_999_999_999_999,
    1,
  ]];
  const names = ["STOP", "RESET", "BLOCK_JOB_COMPLETED", "x-odd-name", "", "__proto__", "a b'c"];
  for (const data of datas) {
    for (const [s, us] of stamps) {
      for (const name of names) {
        const line = qemuLine(s, us, name, data);
        const want = JSON.parse(line);
        const got = parseEventLine(line, 0, line.length);
        assert.ok(got !== undefined, `read by hand: ${line}`);
        assertSame(got, want, line);
        assertSame(frame(line).value, want, line);
      }
    }
  }
  // Inside a longer text, from start to end only.
  const line = qemuLine(5, 6, "STOP");
  assertSame(parseEventLine(`xx${line}yy`, 2, 2 + line.length), JSON.parse(line), "slice");
});

Deno.test("event line: -0 stays -0, as JSON.parse reads it", () => {
  const line = '{"timestamp": {"seconds": -0, "microseconds": 0}, "event": "Z"}';
  const got = parseEventLine(line, 0, line.length) as { timestamp: { seconds: number } };
  assert.ok(Object.is(got.timestamp.seconds, -0));
});

Deno.test("event line: anything but QEMU's exact form is left to JSON.parse", () => {
  const base = qemuLine(1_700_000_000, 123_456, "RESET", '{"guest": false}');
  const others = [
    // Valid JSON that JSON.parse must decide (other spacing, keys, order, escapes, numbers).
    base.replace('{"timestamp": ', '{"timestamp":'),
    base.replace('"event": ', '"event":'),
    base.replace(', "data": ', ',"data": '),
    base.replace('"seconds": 1700000000', '"seconds": 1700000000.5'),
    base.replace('"seconds": 1700000000', '"seconds": 17e8'),
    base.replace('"seconds": 1700000000', '"seconds": 1234567890123456'), // 16 digits
    base.replace('"event": "RESET"', '"event": "RE\\u0053ET"'),
    base.replace('"event": "RESET"', '"event": "RE\\"SET"'),
    base.replace('{"guest": false}}', '{"guest": false}, "data": 2}'), // duplicate key: the last wins
    base.replace('{"guest": false}}', '{"guest": false}, "event": "STOP"}'),
    base.replace('{"guest": false}}', '{"guest": false}, "x": 1}'),
    base.replace('"microseconds": 123456}', '"microseconds": 123456, "x": 1}'),
    '{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}',
    '{"timestamp": {"microseconds": 2, "seconds": 1}, "event": "STOP"}',
    '{"return": {}, "id": 1}',
    // Invalid JSON: the framer must still report it.
    base.replace('"seconds": 1700000000', '"seconds": 01700000000'),
    base.replace('"seconds": 1700000000', '"seconds": -'),
    base.replace('"seconds": 1700000000', '"seconds": +1'),
    base.replace('"seconds": 1700000000', '"seconds": '),
    base.replace('"event": "RESET"', '"event": "RE\tSET"'),
    base.replace('"event": "RESET"', '"event": "RE\\xSET"'),
    base.replace('{"guest": false}}', "}"),
    base.replace('{"guest": false}}', '{"guest": false}}}'),
    base.replace('{"guest": false}}', '{"guest": false} "x"}'),
    base.replace('{"guest": false}}', '{"guest": fals}}'),
    base.replace('{"guest": false}}', '{"guest": false}, }'),
    qemuLine(1, 2, "STOP").replace('"}', '" }').replace('" }', '"x}'),
  ];
  for (const line of others) {
    assert.equal(parseEventLine(line, 0, line.length), undefined, `not read by hand: ${line}`);
    let want: unknown;
    try {
      want = JSON.parse(line);
    } catch {
      assert.ok(frame(line).error instanceof ProtocolError, `a ProtocolError for ${line}`);
      continue;
    }
    assertSame(frame(line).value, want, line);
  }
});

Deno.test("event line: long integers in data still come out exact (bigint)", () => {
  const line = qemuLine(
    1,
    2,
    "BLOCK_JOB_COMPLETED",
    '{"len": 18446744073709551615, "offset": 4096}',
  );
  const out = new JsonObjectFramer().push(enc.encode(line + "\r\n"));
  assert.deepEqual(out, [{
    timestamp: { seconds: 1, microseconds: 2 },
    event: "BLOCK_JOB_COMPLETED",
    data: { len: 18446744073709551615n, offset: 4096 },
  }]);
});

Deno.test("event line: on 20,000 mutated lines, whatever is read by hand equals JSON.parse", () => {
  let seed = 19;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const bases = [
    qemuLine(1_700_000_000, 123_456, "STOP"),
    qemuLine(1_700_000_000, 5, "RESET", '{"guest": false, "reason": "host-qmp-system-reset"}'),
    qemuLine(-1, -1, "X", '[1, {"a": "b"}]'),
  ];
  const alphabet = '{}[]":, \\-0123456789.eE+aZ_tfnul\t';
  let byHand = 0;
  for (let k = 0; k < 20_000; k++) {
    let line = bases[rand(bases.length)];
    for (let m = 1 + rand(3); m > 0; m--) {
      const at = rand(line.length + 1);
      const c = alphabet[rand(alphabet.length)];
      const op = rand(3);
      line = op === 0
        ? line.slice(0, at) + c + line.slice(at + 1)
        : op === 1
        ? line.slice(0, at) + c + line.slice(at)
        : line.slice(0, at) + line.slice(at + 1);
    }
    const got = parseEventLine(line, 0, line.length);
    if (got === undefined || !line.endsWith("}")) continue;
    byHand++;
    assertSame(got, JSON.parse(line), line); // JSON.parse throwing here fails the test too
  }
  assert.ok(byHand > 1000, `${byHand} mutated lines were read by hand`);
});
