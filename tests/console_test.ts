/** SerialConsole: expect-style cursor semantics, in memory. */
import assert from "node:assert/strict";
import { SerialConsole } from "../lib/console.ts";
import { ConnectionClosedError, QmpError, TimeoutError } from "../lib/errors.ts";

Deno.test("console: text printed before waitFor is not lost; each match consumes", async () => {
  const c = new SerialConsole();
  c.append("boot...\nlogin: ");
  const m = await c.waitFor("login:");
  assert.equal(m.before, "boot...\n");
  c.append("x\nlogin: ");
  await c.waitFor("login:"); // the second occurrence
  await assert.rejects(c.waitFor("login:", { timeout: 20 }), TimeoutError);
});

Deno.test("console: RegExp groups and the text before the match", async () => {
  const c = new SerialConsole();
  const p = c.waitFor(/sum-(\d+)\r?\n/, { timeout: "1s" });
  c.append("$ echo sum-$((40+2))\r\nsum-4");
  c.append("2\r\n$ ");
  const m = await p;
  assert.deepEqual(m.groups, ["42"]);
  assert.equal(m.text, "sum-42\r\n");
});

Deno.test("console: concurrent waits resolve the same however the output is chunked", async () => {
  for (const chunks of [["login: ", "READY\n"], ["login: READY\n"], ["log", "in: REA", "DY\n"]]) {
    const c = new SerialConsole();
    const a = c.waitFor("READY", { timeout: 200 });
    const b = c.waitFor("login:", { timeout: 200 });
    for (const ch of chunks) c.append(ch);
    assert.equal((await a).text, "READY", JSON.stringify(chunks));
    assert.equal((await b).text, "login:", JSON.stringify(chunks));
  }
});

Deno.test("console: waits and writes after the end reject with typed errors", async () => {
  const c = new SerialConsole(() => Promise.resolve());
  const pending = c.waitFor("never");
  c.end(new Error("QEMU exited (signal SIGKILL)"));
  await assert.rejects(pending, ConnectionClosedError);
  await assert.rejects(c.write("x"), (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.match(e.message, /SIGKILL/);
    return true;
  });
  await assert.rejects(new SerialConsole().write("x"), QmpError);
});
