/**
 * QOM helpers (lib/qom.ts) and `qmp qom` against real QEMU: the tree of a
 * `-machine pc -S` VM (types, property values, the properties QEMU cannot
 * read shown as errors), the walk's bound on commands in flight, a path that
 * does not exist, get/set round trips, secrets redacted in the CLI's tree.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import {
  connect,
  QmpCommandError,
  qomGet,
  qomList,
  type QomNode,
  qomSet,
  qomTree,
  REDACTED,
  type TranscriptEntry,
} from "../mod.ts";
import { qmp as cli, show } from "./helpers/cli.ts";
import { startQemuForClients } from "./helpers/qemu.ts";

const SECRET = "hunter2-qom-secret";

function find(node: QomNode, path: string): QomNode | undefined {
  const stack = [node];
  while (stack.length) {
    const n = stack.pop()!;
    if (n.path === path) return n;
    stack.push(...n.children);
  }
  return undefined;
}

/** The tree without values: paths, types, property names and which failed. */
function shape(node: QomNode): unknown {
  return {
    path: node.path,
    type: node.type,
    props: node.properties?.map((p) => `${p.name}:${p.type}:${p.error ?? "ok"}`),
    children: node.children.map(shape),
  };
}

/** The most commands outstanding at once, from a transcript. */
function maxInFlight(log: TranscriptEntry[]): number {
  let now = 0;
  let max = 0;
  for (const e of log) {
    if (e.message.event !== undefined) continue;
    now += e.direction === "send" ? 1 : -1;
    max = Math.max(max, now);
  }
  return max;
}

Deno.test({
  name: "qomTree on -machine pc: types, values, unreadable properties as errors, bounded in flight",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using q = await startQemuForClients({ machine: "pc", paused: true });
    const log: TranscriptEntry[] = [];
    await using c = await connect(q.address, { transcript: (e) => log.push(e) });
    log.length = 0;
    const tree = await qomTree(c, "/", { props: true, concurrency: 8 });
    assertEquals([tree.path, tree.name, tree.type], ["/", "", "container"]);
    const machine = find(tree, "/machine")!;
    assert(/^pc-i440fx-.*-machine$/.test(machine.type), machine.type);
    const i440fx = find(tree, "/machine/i440fx")!;
    assertEquals(i440fx.type, "i440FX-pcihost");
    // Values come from qom-get, and match a direct read.
    const typeProp = machine.properties!.find((p) => p.name === "type")!;
    assertEquals(typeProp.value, machine.type);
    const dgc = machine.properties!.find((p) => p.name === "dump-guest-core")!;
    assertEquals(dgc.value, await qomGet(c, "/machine", "dump-guest-core"));
    // Some properties cannot be read (no getter, or "No crash occurred"): kept, as errors.
    const errors: string[] = [];
    const stack = [tree];
    while (stack.length) {
      const n = stack.pop()!;
      for (const p of n.properties ?? []) {
        if (p.error !== undefined) errors.push(`${n.path}.${p.name}: ${p.error}`);
      }
      stack.push(...n.children);
    }
    assert(errors.length > 0, "a -machine pc VM has unreadable properties");
    assert(errors.some((e) => /not readable|No crash occurred/.test(e)), errors.join("\n"));
    // Children are sorted naturally: irq[2] before irq[10].
    const ioapic = find(tree, "/machine/i440fx/ioapic")!;
    const gpio = ioapic.children.map((ch) => ch.name).filter((n) => n.startsWith("unnamed-gpio"));
    assert(gpio.indexOf("unnamed-gpio-in[2]") < gpio.indexOf("unnamed-gpio-in[10]"), gpio.join());
    // Many commands in flight, never more than asked.
    const inflight = maxInFlight(log);
    assert(inflight > 1 && inflight <= 8, `max in flight ${inflight}`);

    // One at a time gives the same tree.
    log.length = 0;
    const sequential = await qomTree(c, "/", { props: true, concurrency: 1 });
    assertEquals(maxInFlight(log), 1);
    assertEquals(shape(sequential), shape(tree)); // values may differ (the RTC ticks)
  },
});

Deno.test({
  name: "qomTree of a path that does not exist rejects with DeviceNotFound; sub-trees work",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using q = await startQemuForClients({ machine: "none" });
    await using c = await connect(q.address);
    await rejects(qomTree(c, "/no/such/thing"), (e: unknown) => {
      assert(e instanceof QmpCommandError, String(e));
      assertEquals(e.class, "DeviceNotFound");
      return true;
    });
    await rejects(qomList(c, "/nope"), QmpCommandError);
    const machine = await qomTree(c, "/machine/");
    assertEquals([machine.path, machine.name, machine.type], [
      "/machine",
      "machine",
      "none-machine",
    ]);
    assert(machine.children.length > 0 && machine.properties === undefined);
    // An aborted walk rejects and sends nothing more.
    const ac = new AbortController();
    ac.abort();
    await rejects(qomTree(c, "/", { signal: ac.signal }), { name: "AbortError" });
  },
});

Deno.test({
  name: "qomSet/qomGet round trip on a throttle-group; qomList shows the property",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using q = await startQemuForClients({ machine: "none" });
    await using c = await connect(q.address);
    await c.execute("object-add", { "qom-type": "throttle-group", id: "tg0" });
    await qomSet(c, "/objects/tg0", "limits", { "iops-total": 123 });
    const limits = await qomGet(c, "/objects/tg0", "limits") as Record<string, unknown>;
    assertEquals(limits["iops-total"], 123);
    const props = await qomList(c, "/objects/tg0");
    assert(
      props.some((p) => p.name === "limits" && p.type === "ThrottleLimits"),
      JSON.stringify(props),
    );
    await rejects(qomGet(c, "/objects/tg0", "no-such-prop"), QmpCommandError);
  },
});

Deno.test({
  name: "qmp qom CLI: ls, get (both forms), set, tree (text, --json, --props, secrets), errors",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using q = await startQemuForClients({
      machine: "none",
      extraArgs: ["-object", `secret,id=sec0,data=${SECRET}`, "-object", "throttle-group,id=tg0"],
    });
    const addr = q.address;

    const ls = await cli(["qom", addr, "ls", "/objects"]);
    assertEquals(ls.code, 0, show(ls));
    assert(/^sec0\/\s+child<secret>$/m.test(ls.stdout), show(ls));
    const lsJson = await cli(["qom", addr, "ls", "/objects", "--json"]);
    assert(JSON.parse(lsJson.stdout).some((p: { name: string }) => p.name === "tg0"), show(lsJson));
    // $QMP_SOCKET and ACTION first, as the issue spells it.
    const lsEnv = await cli(["qom", "ls", "/objects"], { env: { QMP_SOCKET: addr } });
    assertEquals(lsEnv.stdout, ls.stdout, show(lsEnv));

    const set = await cli(["qom", addr, "set", "/objects/tg0.limits", '{"iops-total": 77}']);
    assertEquals([set.code, set.stdout], [0, ""], show(set));
    const get1 = await cli(["qom", addr, "get", "/objects/tg0.x-iops-total"]);
    const get2 = await cli(["qom", addr, "get", "/objects/tg0", "x-iops-total", "--json"]);
    assertEquals([get1.code, get1.stdout, get2.stdout], [0, "77\n", "77\n"], show(get1));
    const set2 = await cli(["qom", addr, "set", "/objects/tg0", "limits", '{"iops-total": 78}']);
    assertEquals(set2.code, 0, show(set2));
    const str = await cli(["qom", addr, "get", "/objects/tg0.type"]);
    assertEquals(str.stdout, "throttle-group\n", show(str)); // strings plain, --json quotes
    assertEquals(
      (await cli(["qom", addr, "get", "/objects/tg0.type", "--json"])).stdout,
      '"throttle-group"\n',
    );

    const tree = await cli(["qom", addr, "tree", "/objects", "--props"]);
    assertEquals(tree.code, 0, show(tree));
    const lines = tree.stdout.split("\n");
    assertEquals(lines[0], "/objects (container)");
    assert(lines.includes("  sec0/ (secret)"), show(tree));
    assert(lines.includes("    x-iops-total: 78 (int)"), show(tree));
    assert(lines.includes(`    data: "${REDACTED}" (string)`), show(tree));
    assert(!tree.stdout.includes(SECRET), "the secret never reaches the terminal");
    const treeJson = await cli(["qom", addr, "tree", "/objects", "--props", "--json"]);
    const parsed = JSON.parse(treeJson.stdout) as QomNode;
    assertEquals(parsed.children.map((ch) => ch.name), ["sec0", "tg0"]);
    assert(!treeJson.stdout.includes(SECRET));
    const plain = await cli(["qom", addr, "tree", "/objects"]);
    assertEquals(plain.stdout, "/objects (container)\n  sec0/ (secret)\n  tg0/ (throttle-group)\n");

    // A path that does not exist: QEMU's error, one line, exit 1.
    const missing = await cli(["qom", addr, "tree", "/nope"]);
    assertEquals(missing.code, 1, show(missing));
    assertEquals(
      missing.stderr,
      "qmp qom: error: qom-list failed: Device '/nope' not found (DeviceNotFound)\n",
    );
    const badProp = await cli(["qom", addr, "get", "/objects/tg0", "nope"]);
    assertEquals([badProp.code, badProp.stderr.split("\n").length], [1, 2], show(badProp));
    // Usage errors: exit 2, before connecting.
    for (
      const args of [
        ["qom", addr, "frobnicate"],
        ["qom", addr, "get", "/objects/tg0"],
        ["qom", addr, "set", "/objects/tg0.x"],
        ["qom", addr, "ls", "/a", "/b"],
        ["qom", addr, "ls", "--props"],
        ["qom", addr, "tree", "--concurrency", "0"],
      ]
    ) {
      const r = await cli(args);
      assertEquals(r.code, 2, `${args.join(" ")}: ${show(r)}`);
      assertEquals(r.stderr.split("\n").length, 2, show(r)); // one line
    }
    // ACTION first without $QMP_SOCKET: a QOM path is not taken for a socket.
    const noAddr = await cli(["qom", "ls", "/machine"], { env: { QMP_SOCKET: "" } });
    assertEquals(noAddr.code, 2, show(noAddr));
    assert(/"\/machine" is not a QMP address/.test(noAddr.stderr), show(noAddr));
    // ACTION first, then a clear ADDRESS.
    const actionFirst = await cli(["qom", "ls", addr, "/objects"], { env: { QMP_SOCKET: "" } });
    assertEquals(actionFirst.stdout, ls.stdout, show(actionFirst));
  },
});
