/**
 * Typed assertions: type-level checks (`// @ts-expect-error` lines fail
 * `deno check` if the line they guard ever compiles) and the runtime
 * behaviour of the matchers, their messages and diffs. No QEMU needed.
 */
import assert from "node:assert/strict";
import type { JobInfo, StatusInfo } from "../lib/qapi/types.ts";
import { ExpectationError } from "../lib/runner/errors.ts";
import { equals, expect, matchObject } from "../lib/runner/expect.ts";
import { diffValues, formatValue } from "../lib/runner/format.ts";
import { recordPath } from "../lib/runner/engine.ts";
import { parseFilter } from "../lib/runner/filter.ts";
import { isPlaybook, playbook, type PlaybookContext } from "../lib/runner/playbook.ts";

const paused: StatusInfo = { running: false, singlestep: false, status: "paused" };

function fails(fn: () => void, message?: RegExp): ExpectationError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ExpectationError, `expected an ExpectationError, got ${e}`);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail("expected the assertion to fail");
}

/**
 * Compile-time checks only: this playbook is defined but never run. Each
 * `@ts-expect-error` must have a type error on the next line.
 */
const typeChecks = playbook({ name: "types", vm: { machine: "none" } }, async (t) => {
  const status = await t.qmp.execute("query-status");
  t.expect(status).toMatchObject({ status: "paused" });
  // @ts-expect-error "pausd" is not a RunState
  t.expect(status).toMatchObject({ status: "pausd" });
  // @ts-expect-error StatusInfo has no member "bogus"
  t.expect(status).toMatchObject({ bogus: 1 });
  // @ts-expect-error .not is typed the same way
  t.expect(status).not.toMatchObject({ status: "pausd" });
  // @ts-expect-error toBe takes the value's type
  t.expect(status.status).toBe("pausd");
  // @ts-expect-error toEqual takes the whole type (missing members)
  t.expect(status).toEqual({ status: "paused" });
  // @ts-expect-error ordering matchers need numbers
  t.expect(status.status).toBeGreaterThan(1);
  // @ts-expect-error toMatch needs a string
  t.expect(status.running).toMatch(/true/);
  // @ts-expect-error toHaveLength needs a length
  t.expect(status).toHaveLength(3);
  // @ts-expect-error toContain needs a string, array or iterable
  t.expect(status.running).toContain(true);

  const jobs: JobInfo[] = await t.qmp.execute("query-jobs");
  t.expect(jobs).toContain({ id: "bk0", status: "concluded" });
  // @ts-expect-error "finished" is not a JobStatus
  t.expect(jobs).toContain({ status: "finished" });
  t.expect(jobs).toHaveLength(0);
  t.expect(jobs.length).toBeLessThan(2);

  // Events: names, `where` patterns and payloads are typed.
  const ev = await t.expectEvent("SHUTDOWN", () => t.qmp.execute("system_powerdown"), {
    where: { guest: true, reason: "guest-shutdown" },
  });
  const guest: boolean = ev.data.guest;
  t.expect(guest).toBe(true);
  // @ts-expect-error "guest-shutdwn" is not a ShutdownCause
  await t.expectEvent("SHUTDOWN", null, { where: { reason: "guest-shutdwn" } });
  // @ts-expect-error no such event
  await t.expectEvent("SHUTDOWNN");
  await t.expectEvent("DEVICE_DELETED", null, { where: (e) => e.data.device === "tab0" });

  // expectError returns a QmpCommandError, or an instance of the given type.
  const err = await t.expectError(() => t.qmp.execute("device_del", { id: "x" }), {
    class: "DeviceNotFound",
  });
  const cls: string = err.class;
  const range = await t.expectError(() => [].at(0), { type: RangeError, message: /x/ });
  const rangeName: string = range.name;
  t.log(cls, rangeName);

  // eventually returns the callback's value.
  const n: number = await t.eventually(() => 42);
  t.expect(n).toBe(42);

  // Unknown values (executeRaw) accept every matcher.
  const raw = await t.qmp.executeRaw("query-status");
  t.expect(raw).toMatchObject({ anything: 1 });
  t.expect(raw).toContain("x");
  t.expect(raw).toBeGreaterThan(1);
  // @ts-expect-error step bodies take t, and step names are strings
  await t.step(1, () => {});
  const ok: boolean = await t.step("s", (inner: PlaybookContext) => inner.log("nested t"));
  t.log(ok);
});

Deno.test("the type-level checks above define a playbook", () => {
  assert.ok(isPlaybook(typeChecks));
  assert.equal(typeChecks.meta.name, "types");
});

Deno.test("toBe / toEqual / toMatchObject pass and fail", () => {
  expect(paused.status).toBe("paused");
  expect(paused).toEqual({ status: "paused", singlestep: false, running: false });
  expect(paused).toMatchObject({ status: "paused" });
  expect(paused).not.toMatchObject({ status: "running" });
  expect({ a: [1, { b: 2, c: 3 }] }).toMatchObject({ a: [1, { b: 2 }] });
  fails(() => expect({ a: [1, 2] }).toMatchObject({ a: [1] }));
  fails(() => expect(paused).toBe({ ...paused }), /identity.*toEqual/);
  fails(() => expect(paused.status).not.toBe("paused"), /not to be "paused"/);

  const e = fails(
    () => expect(paused).toMatchObject({ status: "running", running: true }),
    /to match \{ running: true, status: "running" \}/,
  );
  assert.equal(e.matcher, "toMatchObject");
  assert.deepEqual(e.expected, { status: "running", running: true });
  assert.equal(e.actual, paused);
  assert.equal(
    e.diff,
    [
      "- Expected",
      "+ Received",
      "",
      "  {",
      "-   running: true,",
      '-   status: "running",',
      "+   running: false,",
      '+   status: "paused",',
      "  }",
      "(only the keys in the pattern)",
    ].join("\n"),
  );
});

Deno.test("toEqual ignores undefined members and key order; diffs show both sides", () => {
  expect({ a: 1, b: undefined } as Record<string, unknown>).toEqual({ a: 1 });
  expect({ b: 2, a: 1 }).toEqual({ a: 1, b: 2 });
  expect(new Date(5)).toEqual(new Date(5));
  expect(new Map([[1, { x: 1 }]])).toEqual(new Map([[1, { x: 1 }]]));
  const e = fails(() => expect({ list: [1, 2, 3] }).toEqual({ list: [1, 3] }));
  assert.match(e.diff!, /\n\+ {5}2,\n/);
});

Deno.test("toContain, ordering, defined, truthy, toMatch, toHaveLength", () => {
  expect("QMPKIT-GUEST-READY").toContain("READY");
  expect([{ id: "a", status: "running" }, { id: "b", status: "concluded" }]).toContain({
    id: "b",
  });
  expect(new Set([1, 2])).toContain(2);
  fails(() => expect([1, 2]).toContain(3), /to contain 3/);
  fails(() => expect(["a"]).not.toContain("a"), /not to contain "a"/);
  expect(3).toBeGreaterThan(2);
  expect(2n).toBeLessThan(3);
  fails(() => expect(2).toBeGreaterThan(2), /2 to be greater than 2/);
  fails(() => expect(undefined as number | undefined).toBeLessThan(1), /got undefined/);
  expect(0).toBeDefined();
  fails(() => expect(undefined).toBeDefined(), /got undefined/);
  expect(undefined).not.toBeDefined();
  expect("x").toBeTruthy();
  fails(() => expect(0).toBeTruthy(), /0 to be truthy/);
  expect("mark=42").toMatch(/mark=(\d+)/);
  expect("mark=42").toMatch("42");
  fails(() => expect("abc").toMatch(/^b/), /"abc" to match \/\^b\//);
  expect([1, 2]).toHaveLength(2);
  fails(() => expect("abc").toHaveLength(2), /expected length 2, got 3/);
  fails(() => expect(1 as unknown).toHaveLength(1), /a value with a length/);
});

Deno.test("labels prefix messages; .not flips the matcher name", () => {
  const e = fails(() => expect(1, "status after stop").not.toBe(1));
  assert.match(e.message, /^status after stop: /);
  assert.equal(e.matcher, "not.toBe");
  assert.equal(e.name, "ExpectationError");
});

Deno.test("equals and matchObject edge cases", () => {
  assert.ok(equals(NaN, NaN));
  assert.ok(!equals([1], { 0: 1 }));
  assert.ok(!equals(new Set([1]), new Set([2])));
  assert.ok(matchObject({ a: undefined }, { a: undefined }));
  assert.ok(matchObject({}, { a: undefined }));
  assert.ok(!matchObject({ a: 1 }, { a: undefined }));
  assert.ok(!matchObject(null, {}));
  assert.ok(matchObject([{ a: 1, b: 2 }], [{ a: 1 }]));
});

Deno.test("formatValue and diffValues", () => {
  assert.equal(
    formatValue({ b: 1, a: [true, null] }),
    "{\n  a: [\n    true,\n    null,\n  ],\n  b: 1,\n}",
  );
  assert.equal(formatValue({ "node-name": "x" }), '{\n  "node-name": "x",\n}');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(formatValue(cyclic), "{\n  self: [Circular],\n}");
  assert.equal(diffValues({ a: 1 }, { a: 1 }), undefined);
  assert.equal(diffValues("a\nb", "a\nc"), "- Expected\n+ Received\n\n  a\n- b\n+ c");
});

Deno.test("--filter: substrings, nested paths and regexes", () => {
  const sub = parseFilter("backup");
  assert.ok(sub.matches("block › backup › job concludes"));
  assert.ok(!sub.matches("block"));
  assert.ok(!sub.mayContain("block"));
  const path = parseFilter("block › backup");
  assert.ok(path.mayContain("block"));
  assert.ok(!path.mayContain("blocks"));
  const re = parseFilter("/^pause/i");
  assert.ok(re.matches("Pause and resume"));
  assert.ok(!re.matches("un-pause"));
  assert.ok(re.matches("Pause") && re.matches("Pause"), "no lastIndex state (g/y dropped)");
  assert.throws(() => parseFilter("/(/"), SyntaxError);
});

Deno.test("recordPath: one JSONL file per playbook, unique names", () => {
  const taken = new Set<string>();
  assert.equal(recordPath("/r", "/x/lifecycle.playbook.ts", taken), "/r/lifecycle.jsonl");
  assert.equal(recordPath("/r", "/y/lifecycle.playbook.ts", taken), "/r/lifecycle-2.jsonl");
  assert.equal(recordPath("/r", "/z/odd name!.ts", taken), "/r/odd_name_.jsonl");
});

Deno.test("playbook() validates its arguments", () => {
  assert.throws(() => playbook({ name: "" }, () => {}), /meta\.name must be a non-empty string/);
  // @ts-expect-error the body must be a function
  assert.throws(() => playbook("x", 1), /must be a function/);
  const pb = playbook("by name", () => {});
  assert.equal(pb.meta.name, "by name");
  assert.ok(Object.isFrozen(pb));
  assert.ok(!isPlaybook({ kind: "qmpkit.playbook" }));
});

Deno.test("playbook tags are validated; playbook.skip and playbook.only set meta", () => {
  assert.deepEqual(playbook({ name: "t", tags: ["block", "slow"] }, () => {}).meta.tags, [
    "block",
    "slow",
  ]);
  for (const bad of ["", "a b", "a,b", "!x"]) {
    assert.throws(
      () => playbook({ name: "t", tags: [bad] }, () => {}),
      /tag .* must be a non-empty word without spaces or commas, not starting with !/,
    );
  }
  // @ts-expect-error tags is an array
  assert.throws(() => playbook({ name: "t", tags: "block" }, () => {}), /must be an array/);
  assert.equal(playbook.skip("s", () => {}).meta.skip, "playbook.skip");
  assert.equal(
    playbook.skip({ name: "s", skip: "flaky on TCG" }, () => {}).meta.skip,
    "flaky on TCG",
  );
  assert.equal(playbook.only("o", () => {}).meta.only, true);
  assert.equal(playbook("p", () => {}).meta.only, undefined);
});
