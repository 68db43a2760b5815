/**
 * Unit tests of `qmp info`: gathering through a fake command runner (parts
 * QEMU lacks become null, connection errors propagate), the HMP/PCI parsers
 * and the text layout. No permissions.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
} from "node:assert/strict";
import { ConnectionClosedError, QmpCommandError } from "../mod.ts";
import { qmp, show } from "./helpers/cli.ts";
import {
  type CommandRunner,
  flattenPci,
  formatBytes,
  formatInfo,
  gatherInfo,
  parseInfoNetwork,
  parseInfoUsb,
} from "../scripts/cli/info.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

/** Replies as QEMU 7.2 did for `-M pc -S -m 64 -device qemu-xhci -device usb-tablet -nic user,model=e1000`. */
const PC: Record<string, unknown> = {
  "query-version": {
    qemu: { micro: 22, minor: 2, major: 7 },
    package: "Debian 1:7.2+dfsg-7+deb12u18+b3",
  },
  "query-status": { status: "prelaunch", singlestep: false, running: false },
  "query-name": { name: "vm1" },
  "query-uuid": { UUID: "00000000-0000-0000-0000-000000000000" },
  "query-target": { arch: "x86_64" },
  "qom-get /machine": "pc-i440fx-7.2-machine",
  "qom-get /machine/unattached/device[0]": "qemu64-x86_64-cpu",
  "query-machines": [
    { name: "pc-i440fx-7.2", alias: "pc", "cpu-max": 255 },
    { name: "none", "cpu-max": 1 },
  ],
  "query-kvm": { enabled: false, present: true },
  "query-cpus-fast": [{
    "thread-id": 12449,
    props: { "core-id": 0, "thread-id": 0, "socket-id": 0 },
    "qom-path": "/machine/unattached/device[0]",
    "cpu-index": 0,
    target: "x86_64",
  }],
  "query-memory-size-summary": { "base-memory": 67108864, "plugged-memory": 0 },
  "query-block": [{
    "io-status": "ok",
    device: "d0",
    locked: false,
    removable: false,
    inserted: {
      image: { "virtual-size": 16777216, filename: "/tmp/d.qcow2", format: "qcow2" },
      ro: false,
      "node-name": "#block184",
      drv: "qcow2",
      file: "/tmp/d.qcow2",
      backing_file_depth: 0,
    },
    qdev: "/machine/peripheral-anon/device[2]/virtio-backend",
    type: "unknown",
  }, { device: "cd0", removable: true, locked: false, tray_open: true, type: "unknown" }],
  "query-named-block-nodes": [
    { "node-name": "#block184", drv: "qcow2", file: "/tmp/d.qcow2", ro: false, image: {} },
    { "node-name": "n0", drv: "null-co", file: "null-co://", ro: true, image: {} },
  ],
  "info network": "e1000.0: index=0,type=nic,model=e1000,macaddr=52:54:00:12:34:56\r\n" +
    " \\ #net028: index=0,type=user,net=10.0.2.0,restrict=off\r\n",
  "info usb": "  Device 0.0, Port 1, Speed 480 Mb/s, Product QEMU USB Tablet, ID: tab0\r\n",
  "query-pci": [{
    bus: 0,
    devices: [
      {
        bus: 0,
        slot: 0,
        function: 0,
        class_info: { class: 1536, desc: "Host bridge" },
        id: { device: 4663, vendor: 32902 },
        qdev_id: "",
      },
      {
        bus: 0,
        slot: 3,
        function: 0,
        class_info: { class: 3075, desc: "USB controller" },
        id: { device: 13, vendor: 6966 },
        qdev_id: "xhci",
      },
    ],
  }],
  "query-chardev": [{
    "frontend-open": true,
    filename: "unix:/tmp/q.sock,server=on",
    label: "mon",
  }],
  "query-migrate": {},
};

/** A runner answering from `replies`; missing commands fail like QEMU's CommandNotFound. */
function fakeRunner(replies: Record<string, unknown>, calls: string[] = []): CommandRunner {
  return {
    executeRaw(command, args) {
      const key = command === "human-monitor-command"
        ? String(args?.["command-line"])
        : command === "qom-get"
        ? `qom-get ${args?.path}`
        : command;
      calls.push(key);
      if (key in replies) {
        const v = replies[key];
        return v instanceof Error ? Promise.reject(v) : Promise.resolve(v);
      }
      return Promise.reject(
        new QmpCommandError(
          command,
          args,
          "CommandNotFound",
          `The command ${command} has not been found`,
        ),
      );
    },
  };
}

test("gatherInfo: every part from a -M pc QEMU", async () => {
  const r = await gatherInfo(fakeRunner(PC), "unix:/tmp/q.sock");
  assertEquals(r.version, { qemu: "7.2.22", package: "Debian 1:7.2+dfsg-7+deb12u18+b3" });
  assertEquals(r.status, { status: "prelaunch", running: false });
  assertEquals(r.name, "vm1");
  assertEquals(r.machine, { type: "pc-i440fx-7.2", alias: "pc", arch: "x86_64" });
  assertEquals(r.accelerator, { name: "tcg", kvmPresent: true });
  assertEquals(r.cpus?.count, 1);
  assertEquals(r.cpus?.model, "qemu64-x86_64-cpu");
  assertEquals(r.memory, { base: 67108864, plugged: 0 });
  assertEquals(r.block?.[0].inserted?.virtualSize, 16777216);
  assertEquals(r.block?.[1], {
    device: "cd0",
    qdev: null,
    removable: true,
    trayOpen: true,
    ioStatus: null,
    inserted: null,
  });
  assertEquals(r.blockNodes?.map((n) => n.node), ["#block184", "n0"]);
  assertEquals(r.network?.[0].props.macaddr, "52:54:00:12:34:56");
  assertEquals(r.network?.[0].peer?.name, "#net028");
  assertEquals(r.usb, [{
    address: "0.0",
    port: "1",
    speed: "480 Mb/s",
    product: "QEMU USB Tablet",
    id: "tab0",
  }]);
  assertEquals(r.pci?.map((p) => `${p.vendor}:${p.device}`), ["8086:1237", "1b36:000d"]);
  assertEquals(r.migration, { status: "none" });
  assertEquals(r.unavailable, {});
});

test("gatherInfo: missing commands and disabled features become null, not failures", async () => {
  const replies = { ...PC, "info usb": "Error: USB support not enabled\r\n" } as Record<
    string,
    unknown
  >;
  delete replies["query-kvm"];
  delete replies["query-memory-size-summary"];
  replies["query-pci"] = new QmpCommandError("query-pci", undefined, "GenericError", "no PCI bus");
  const r = await gatherInfo(fakeRunner(replies), "tcp:127.0.0.1:4444");
  assertEquals(r.accelerator, null);
  assertEquals(r.memory, null);
  assertEquals(r.usb, null);
  assertEquals(r.pci, null);
  assertEquals(r.unavailable, {
    accelerator: "query-kvm: The command query-kvm has not been found (CommandNotFound)",
    memory:
      "query-memory-size-summary: The command query-memory-size-summary has not been found (CommandNotFound)",
    pci: "query-pci: no PCI bus (GenericError)",
    usb: "HMP info usb: Error: USB support not enabled",
  });
  const text = formatInfo(r);
  assert(
    text.includes("Accelerator  n/a (query-kvm: The command query-kvm has not been found"),
    text,
  );
  assert(text.includes("USB          n/a (HMP info usb: Error: USB support not enabled)"), text);
  assert(text.includes("QEMU         7.2.22"), text);
});

test("gatherInfo: a connection error is not hidden", async () => {
  const replies = { ...PC, "query-block": new ConnectionClosedError("QEMU went away") };
  await assertRejects(gatherInfo(fakeRunner(replies), "x"), ConnectionClosedError);
});

test("formatInfo: aligned, readable sections", async () => {
  const text = formatInfo(await gatherInfo(fakeRunner(PC), "unix:/tmp/q.sock"));
  assertEquals(text.split("\n"), [
    "QEMU         7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
    "Address      unix:/tmp/q.sock",
    "Status       prelaunch (vCPUs stopped)",
    "Name         vm1",
    "UUID         00000000-0000-0000-0000-000000000000",
    "Machine      pc-i440fx-7.2 (alias pc), arch x86_64",
    "Accelerator  TCG (KVM built in but not enabled)",
    "CPUs         1 x qemu64",
    "               #0 thread 12449 (core 0, thread 0, socket 0)",
    "Memory       64 MiB",
    "Block        d0: qcow2 /tmp/d.qcow2 (16 MiB) on /machine/peripheral-anon/device[2]/virtio-backend",
    "             cd0: empty (tray open)",
    "Block nodes  2 nodes; named: n0 (null-co)",
    "Network      e1000.0: e1000 52:54:00:12:34:56 <-> #net028 (user)",
    "PCI          00:00.0 Host bridge [8086:1237]",
    "             00:03.0 USB controller [1b36:000d] id=xhci",
    "USB          0.0 port 1: QEMU USB Tablet (480 Mb/s) id=tab0",
    "Chardevs     mon: unix:/tmp/q.sock,server=on",
    "Migration    none",
  ]);
});

test("parsers: info network, info usb, query-pci bridges, byte sizes", () => {
  assertEquals(
    parseInfoNetwork(
      "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01\n" +
        " \\ user0: index=0,type=user,net=10.0.2.0\n" +
        "hub 0\n" +
        "tap0: index=0,type=tap,ifname=tap0\n",
    ),
    [
      {
        name: "net0",
        props: { index: "0", type: "nic", model: "virtio-net-pci", macaddr: "52:54:00:00:00:01" },
        peer: { name: "user0", props: { index: "0", type: "user", net: "10.0.2.0" } },
      },
      { name: "tap0", props: { index: "0", type: "tap", ifname: "tap0" }, peer: null },
    ],
  );
  assertEquals(parseInfoNetwork(""), []);
  // Without -nodefaults the NIC and its backend hang off a hub.
  const hubbed = parseInfoNetwork(
    "hub 0\r\n \\ hub0port1: #net132: index=0,type=user,net=10.0.2.0,restrict=off\r\n" +
      " \\ hub0port0: e1000e.0: index=0,type=nic,model=e1000e,macaddr=52:54:00:12:34:56\r\n",
  );
  assertEquals(hubbed.map((n) => [n.name, n.props.type, n.props.hubport, n.peer]), [
    ["#net132", "user", "hub0port1", null],
    ["e1000e.0", "nic", "hub0port0", null],
  ]);
  assertEquals(parseInfoUsb("  Device 1.2, Port 1.4, Speed 12 Mb/s, Product QEMU USB Mouse\n"), [
    { address: "1.2", port: "1.4", speed: "12 Mb/s", product: "QEMU USB Mouse", id: null },
  ]);
  const pci = flattenPci([{
    bus: 0,
    devices: [{
      bus: 0,
      slot: 5,
      function: 0,
      class_info: { class: 1540 },
      id: { vendor: 0x1b36, device: 1 },
      qdev_id: "br0",
      pci_bridge: {
        devices: [{
          bus: 1,
          slot: 1,
          function: 0,
          class_info: { desc: "SCSI controller" },
          id: { vendor: 0x1af4, device: 0x1004 },
        }],
      },
    }],
  }]);
  assertEquals(pci.map((p) => [p.bus, p.class, p.vendor, p.device, p.qdevId]), [
    [0, "class 0604", "1b36", "0001", "br0"],
    [1, "SCSI controller", "1af4", "1004", null],
  ]);
  assertEquals(formatBytes(512), "512 B");
  assertEquals(formatBytes(64 * 1024 * 1024), "64 MiB");
  assertEquals(formatBytes(1.5 * 1024 ** 3), "1.5 GiB");
});

Deno.test("qmp info --launch: Address is the VM's monitor socket a second client can use", async () => {
  const r = await qmp(
    ["info", "--launch", "--launch-args", "-machine none", "--json"],
    { timeoutMs: 60_000 },
  );
  assertEquals(r.code, 0, show(r));
  const address: string = JSON.parse(r.stdout).address;
  // QEMU dials the launcher's socket (accept mode), which is gone once it is in;
  // the address to report is the VM's server-mode monitor, qmp.sock.
  assert(/^unix:.*\/qmp\.sock$/.test(address), address);
});
