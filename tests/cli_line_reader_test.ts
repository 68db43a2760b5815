/**
 * readBoundedLines (scripts/cli/line_reader.ts): lines split anywhere across
 * chunks, CRLF, UTF-8 split across chunks, and the per-line bound.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { OversizeLine, readBoundedLines } from "../scripts/cli/line_reader.ts";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

async function collect(chunks: (string | Uint8Array)[], max?: number) {
  const enc = new TextEncoder();
  const stream = ReadableStream.from(chunks.map((c) => typeof c === "string" ? enc.encode(c) : c));
  const out: (string | { oversize: number })[] = [];
  for await (const l of readBoundedLines(stream, max)) {
    out.push(l instanceof OversizeLine ? { oversize: l.bytes } : l);
  }
  return out;
}

test("readBoundedLines: lines across chunks, CRLF, blank lines, no final newline", async () => {
  assertEquals(await collect(["a\r\nb", "c\n\nd"]), ["a", "bc", "", "d"]);
  assertEquals(await collect(["ab", "c", "d\n", "e\n"]), ["abcd", "e"]);
  assertEquals(await collect([]), []);
  assertEquals(await collect(["\n"]), [""]);
  const euro = new TextEncoder().encode("x=€\n"); // € is 3 bytes: split it
  assertEquals(await collect([euro.slice(0, 3), euro.slice(3)]), ["x=€"]);
});

test("readBoundedLines: a line over the bound is dropped and reported; the next ones come", async () => {
  assertEquals(await collect(["12345\n123456\n1234567", "89\nok\n"], 6), [
    "12345",
    "123456",
    { oversize: 9 },
    "ok",
  ]);
  assertEquals(await collect(["123456\r\n", "1234567\r\n"], 6), ["123456", { oversize: 8 }]);
  assertEquals(await collect(["1234567"], 6), [{ oversize: 7 }]);
  // Many small chunks of one long line: still one line.
  const parts = Array.from({ length: 1000 }, () => "ab");
  assertEquals(await collect([...parts, "\n"]), ["ab".repeat(1000)]);
});
