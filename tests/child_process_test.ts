/**
 * pump(): a child's output drained in small reads that grow with a burst and
 * shrink back, so an idle child costs little memory (issue 19, 50 real VMs).
 */
import assert from "node:assert/strict";
import { findOnPath, pump, PUMP_MAX_READ, PUMP_MIN_READ } from "../lib/child_process.ts";

const encoder = new TextEncoder();

/**
 * A byte stream like a child's pipe (Deno's allocate 64 KiB per read unless the
 * reader brings its own buffer), serving `chunks` one read at a time; records
 * the size of each read's buffer.
 */
function pipeLike(chunks: Uint8Array[]): { stream: ReadableStream<Uint8Array>; sizes: number[] } {
  const sizes: number[] = [];
  let current = chunks.shift();
  const stream = new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 64 * 1024,
    pull(controller) {
      const request = controller.byobRequest!;
      const view = request.view as Uint8Array;
      sizes.push(view.byteLength);
      if (current === undefined) {
        controller.close();
        request.respond(0);
        return;
      }
      const n = Math.min(view.byteLength, current.byteLength);
      view.set(current.subarray(0, n));
      current = n < current.byteLength ? current.subarray(n) : chunks.shift();
      request.respond(n);
    },
  });
  return { stream, sizes };
}

Deno.test("pump reads a quiet pipe in small reads, grows for a burst, shrinks back", async () => {
  const burst = "é€x".repeat(40_000); // multi-byte characters split across reads
  const parts = ["boot\n", burst, "a", "b\n", "c", "d", "e", "f", "g", "h", "i", "j"];
  const { stream, sizes } = pipeLike(parts.map((p) => encoder.encode(p)));
  let text = "";
  const p = pump(stream, (t) => (text += t));
  await p.done;
  assert.equal(text, parts.join(""));
  assert(sizes[0] <= PUMP_MIN_READ, `first read ${sizes[0]} bytes`);
  assert.equal(Math.max(...sizes), PUMP_MAX_READ, `reads ${sizes.join(",")}`);
  assert(sizes.every((s) => s <= PUMP_MAX_READ));
  assert(sizes.at(-1)! <= PUMP_MIN_READ * 2, `after the burst, reads shrank: ${sizes.join(",")}`);
});

Deno.test("pump still reads a stream that is not a byte stream", async () => {
  const stream = ReadableStream.from([encoder.encode("one "), encoder.encode("two")]);
  let text = "";
  await pump(stream, (t) => (text += t)).done;
  assert.equal(text, "one two");
});

Deno.test("pump: idle children's pipes hold small pending reads, not 64 KiB each", async () => {
  const count = 20;
  const children = Array.from(
    { length: count },
    () => new Deno.Command("sleep", { args: ["30"], stdout: "piped", stderr: "piped" }).spawn(),
  );
  try {
    await new Promise((r) => setTimeout(r, 50));
    const before = Deno.memoryUsage().external;
    const pumps = children.flatMap((c) => [pump(c.stdout, () => {}), pump(c.stderr, () => {})]);
    await new Promise((r) => setTimeout(r, 100)); // every read pending
    const perPipe = (Deno.memoryUsage().external - before) / pumps.length;
    // 64 KiB per pipe before: the stream's default read size.
    assert(perPipe < 8 * 1024, `${Math.round(perPipe)} bytes of buffers per idle pipe`);
    for (const c of children) c.kill("SIGKILL");
    await Promise.all(children.map((c) => c.status));
    await Promise.all(pumps.map((p) => p.done));
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch { /* gone */ }
    }
  }
});

Deno.test("findOnPath: a repeated lookup stats the previous hit only; a vanished binary is missing", async () => {
  const root = await Deno.makeTempDir({ prefix: "qmpkit-path-" });
  const savedPath = Deno.env.get("PATH");
  const realStat = Deno.statSync;
  let stats = 0;
  try {
    const dirs = Array.from({ length: 6 }, (_, i) => `${root}/d${i}`);
    for (const d of dirs) await Deno.mkdir(d);
    const name = `qmpkit-fake-qemu-${crypto.randomUUID()}`;
    await Deno.writeTextFile(`${dirs[5]}/${name}`, "");
    Deno.env.set("PATH", dirs.join(":"));
    Deno.statSync = (p) => (stats++, realStat(p));
    assert.equal(findOnPath(name), `${dirs[5]}/${name}`);
    assert.equal(stats, 6);
    stats = 0;
    assert.equal(findOnPath(name), `${dirs[5]}/${name}`);
    assert.equal(stats, 1, "the second lookup re-checks the previous hit only");
    await Deno.remove(`${dirs[5]}/${name}`);
    assert.equal(findOnPath(name), null);
    await Deno.writeTextFile(`${dirs[2]}/${name}`, "");
    assert.equal(findOnPath(name), `${dirs[2]}/${name}`);
    Deno.env.set("PATH", dirs.slice(3).join(":")); // another PATH: searched again
    assert.equal(findOnPath(name), null);
  } finally {
    Deno.statSync = realStat;
    if (savedPath === undefined) Deno.env.delete("PATH");
    else Deno.env.set("PATH", savedPath);
    await Deno.remove(root, { recursive: true });
  }
});
