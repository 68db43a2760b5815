/**
 * `qmp info ADDRESS`: a readable summary of a VM (version, run state,
 * machine, CPUs, memory, block, network, PCI/USB, chardevs, migration).
 *
 * Gathering ({@link gatherInfo}) only needs something with `executeRaw`, and
 * formatting ({@link formatInfo}) is pure, so both are unit-testable.
 *
 * @module
 */
import { QmpCommandError } from "../../mod.ts";
import {
  COMMON_HELP,
  durationOption,
  EXIT_OK,
  hmpText,
  parseCommandLine,
  takeAddress,
  toJson,
  UsageError,
  withTarget,
  writeOut,
} from "./common.ts";

/** `qmp info --help`. */
export const INFO_HELP = `Usage: qmp info ADDRESS [--json] [options]

Prints a summary of the VM: QEMU version, run state, name/UUID, machine type,
accelerator, CPUs, memory, block devices and their images, block nodes,
network devices, PCI and USB devices, character devices and migration state.
Parts the QEMU cannot report (command missing, feature not enabled) are shown
as "n/a" and listed under "unavailable"; they do not make the command fail.

Options:
  --json                    print everything as one JSON object with the keys
                            address, version, status, name, uuid, machine,
                            accelerator, cpus, memory, block, blockNodes, network,
                            pci, usb, chardevs, migration, unavailable
                            (a part that is not available is null)
  --pretty | --compact      force indented / one-line JSON
  --timeout D               per-query timeout (default 10s)

${COMMON_HELP}

Exit status: 0 ok; 1 connection/launch failure; 2 usage error.`;

/** Something that can run QMP commands by name (a `QmpClient`, or a fake in tests). */
export interface CommandRunner {
  /** Runs `command` and resolves with its return value. */
  executeRaw(command: string, args?: Record<string, unknown>): Promise<unknown>;
}

/** One CPU, as reported by `query-cpus-fast`. */
export interface CpuInfo {
  /** `cpu-index`. */
  index: number;
  /** Host thread id of the vCPU. */
  thread: number | null;
  /** QOM path. */
  qomPath: string;
  /** Topology properties (socket-id, core-id, thread-id, ...). */
  props: Record<string, unknown>;
}

/** One block device from `query-block`. */
export interface BlockDeviceInfo {
  /** Legacy drive id (may be empty with -blockdev). */
  device: string;
  /** The guest device's QOM path or id. */
  qdev: string | null;
  /** Removable medium. */
  removable: boolean;
  /** Tray open (removable media only). */
  trayOpen: boolean | null;
  /** I/O status (ok, failed, nospace). */
  ioStatus: string | null;
  /** The inserted medium, or null when empty. */
  inserted: ImageInfo | null;
}

/** A block node / image. */
export interface ImageInfo {
  /** Node name. */
  node: string | null;
  /** Block driver (qcow2, raw, file, null-co, ...). */
  driver: string;
  /** File name. */
  file: string;
  /** Read-only. */
  readOnly: boolean;
  /** Virtual size in bytes, when known (a bigint beyond 2^53). */
  virtualSize: number | bigint | null;
  /** Backing file, when there is one. */
  backing: string | null;
}

/** One network device, from HMP `info network`. */
export interface NetInfo {
  /** Device or netdev name (`e1000.0`, `net0`). */
  name: string;
  /** `key=value` properties (`model`, `macaddr`, `type`, ...). */
  props: Record<string, string>;
  /** The peer (backend) of a NIC, when listed. */
  peer: { name: string; props: Record<string, string> } | null;
}

/** One PCI function, from `query-pci`. */
export interface PciInfo {
  /** Bus number. */
  bus: number;
  /** Slot. */
  slot: number;
  /** Function. */
  function: number;
  /** Class description (`Ethernet controller`). */
  class: string;
  /** Vendor id, 4 hex digits. */
  vendor: string;
  /** Device id, 4 hex digits. */
  device: string;
  /** The device's `id`, when it has one. */
  qdevId: string | null;
}

/** One USB device, from HMP `info usb`. */
export interface UsbInfo {
  /** `bus.addr`. */
  address: string;
  /** Port path. */
  port: string;
  /** Speed (`480 Mb/s`). */
  speed: string;
  /** Product name. */
  product: string;
  /** Device id, when set. */
  id: string | null;
}

/** Everything `qmp info` reports. `null` marks a part that is not available. */
export interface InfoReport {
  /** Where the VM is. */
  address: string;
  /** QEMU version: `{qemu: "7.2.22", package}`. */
  version: { qemu: string; package: string } | null;
  /** Run state. */
  status: { status: string; running: boolean } | null;
  /** VM name (`-name`), or null when unnamed. */
  name: string | null;
  /** VM UUID. */
  uuid: string | null;
  /** Machine type and target architecture. */
  machine: { type: string | null; alias: string | null; arch: string | null } | null;
  /** Accelerator. */
  accelerator: { name: string; kvmPresent: boolean } | null;
  /** vCPUs and their model. */
  cpus: { count: number; model: string | null; list: CpuInfo[] } | null;
  /** Memory in bytes (a bigint beyond 2^53). */
  memory: { base: number | bigint; plugged: number | bigint | null } | null;
  /** Block devices. */
  block: BlockDeviceInfo[] | null;
  /** All named block nodes (graph nodes). */
  blockNodes: ImageInfo[] | null;
  /** Network devices. */
  network: NetInfo[] | null;
  /** PCI functions. */
  pci: PciInfo[] | null;
  /** USB devices. */
  usb: UsbInfo[] | null;
  /** Character devices. */
  chardevs: { label: string; filename: string; frontendOpen: boolean }[] | null;
  /** Migration state (`none` when no migration ran). */
  migration: { status: string; [key: string]: unknown } | null;
  /** Why each missing part is missing. */
  unavailable: Record<string, string>;
}

type Obj = Record<string, unknown>;

/**
 * Runs the queries (concurrently) and builds the report. A part whose
 * command fails with a QMP error (CommandNotFound, feature not enabled, ...)
 * becomes null and is explained in `unavailable`; connection errors reject.
 */
export async function gatherInfo(qmp: CommandRunner, address: string): Promise<InfoReport> {
  const unavailable: Record<string, string> = {};
  const q = async <T>(part: string, command: string, args?: Obj): Promise<T | null> => {
    try {
      return await qmp.executeRaw(command, args) as T;
    } catch (err) {
      if (err instanceof QmpCommandError) {
        unavailable[part] ??= `${command}: ${err.desc} (${err.class})`;
        return null;
      }
      throw err;
    }
  };
  const hmp = async (part: string, line: string): Promise<string | null> => {
    const out = await q<string>(part, "human-monitor-command", { "command-line": line });
    if (out === null) return null;
    const text = hmpText(out);
    if (/^(Error: |unknown command)/.test(text)) {
      unavailable[part] ??= `HMP ${line}: ${text.trim()}`;
      return null;
    }
    return text;
  };

  const [
    version,
    status,
    name,
    uuid,
    target,
    machineType,
    machines,
    kvm,
    cpus,
    memory,
    block,
    nodes,
    network,
    pci,
    usb,
    chardevs,
    migration,
  ] = await Promise.all([
    q<Obj>("version", "query-version"),
    q<Obj>("status", "query-status"),
    q<Obj>("name", "query-name"),
    q<Obj>("uuid", "query-uuid"),
    q<Obj>("machine", "query-target"),
    q<string>("machine", "qom-get", { path: "/machine", property: "type" }),
    q<Obj[]>("machine", "query-machines"),
    q<Obj>("accelerator", "query-kvm"),
    q<Obj[]>("cpus", "query-cpus-fast"),
    q<Obj>("memory", "query-memory-size-summary"),
    q<Obj[]>("block", "query-block"),
    q<Obj[]>("blockNodes", "query-named-block-nodes", { flat: true }),
    hmp("network", "info network"),
    q<Obj[]>("pci", "query-pci"),
    hmp("usb", "info usb"),
    q<Obj[]>("chardevs", "query-chardev"),
    q<Obj>("migration", "query-migrate"),
  ]);

  let cpuModel: string | null = null;
  if (cpus && cpus.length > 0 && typeof cpus[0]["qom-path"] === "string") {
    cpuModel = await q<string>("cpus", "qom-get", {
      path: cpus[0]["qom-path"],
      property: "type",
    });
  }

  return {
    address,
    version: version ? versionOf(version) : null,
    status: status ? { status: String(status.status), running: Boolean(status.running) } : null,
    name: typeof name?.name === "string" ? name.name : null,
    uuid: typeof uuid?.UUID === "string" ? uuid.UUID : null,
    machine: target || machineType || machines ? machineOf(machineType, machines, target) : null,
    accelerator: kvm
      ? { name: kvm.enabled ? "kvm" : "tcg", kvmPresent: Boolean(kvm.present) }
      : null,
    cpus: cpus
      ? {
        count: cpus.length,
        model: cpuModel,
        list: cpus.map((c) => ({
          index: Number(c["cpu-index"]),
          thread: typeof c["thread-id"] === "number" ? c["thread-id"] : null,
          qomPath: String(c["qom-path"] ?? ""),
          props: (c.props as Obj) ?? {},
        })),
      }
      : null,
    memory: memory
      ? {
        base: isInt(memory["base-memory"]) ? memory["base-memory"] : 0,
        plugged: isInt(memory["plugged-memory"]) ? memory["plugged-memory"] : null,
      }
      : null,
    block: block ? block.map(blockDeviceOf) : null,
    blockNodes: nodes ? nodes.map(imageOf) : null,
    network: network === null ? null : parseInfoNetwork(network),
    pci: pci ? flattenPci(pci) : null,
    usb: usb === null ? null : parseInfoUsb(usb),
    chardevs: chardevs
      ? chardevs.map((c) => ({
        label: String(c.label),
        filename: String(c.filename),
        frontendOpen: Boolean(c["frontend-open"]),
      }))
      : null,
    migration: migration ? { ...migration, status: String(migration.status ?? "none") } : null,
    unavailable,
  };
}

function versionOf(v: Obj): { qemu: string; package: string } {
  const q = (v.qemu ?? {}) as Obj;
  return { qemu: `${q.major}.${q.minor}.${q.micro}`, package: String(v.package ?? "").trim() };
}

function machineOf(
  type: string | null,
  machines: Obj[] | null,
  target: Obj | null,
): { type: string | null; alias: string | null; arch: string | null } {
  const current = machines?.find((m) => m["is-current"] === true);
  let name = typeof current?.name === "string" ? current.name : null;
  if (!name && type) name = type.replace(/-machine$/, "");
  const entry = machines?.find((m) => m.name === name);
  return {
    type: name,
    alias: typeof entry?.alias === "string" ? entry.alias : null,
    arch: typeof target?.arch === "string" ? target.arch : null,
  };
}

function blockDeviceOf(b: Obj): BlockDeviceInfo {
  const inserted = b.inserted as Obj | undefined;
  return {
    device: String(b.device ?? ""),
    qdev: typeof b.qdev === "string" ? b.qdev : null,
    removable: Boolean(b.removable),
    trayOpen: typeof b.tray_open === "boolean" ? b.tray_open : null,
    ioStatus: typeof b["io-status"] === "string" ? b["io-status"] : null,
    inserted: inserted ? imageOf(inserted) : null,
  };
}

function imageOf(n: Obj): ImageInfo {
  const image = (n.image ?? {}) as Obj;
  return {
    node: typeof n["node-name"] === "string" ? n["node-name"] : null,
    driver: String(n.drv ?? image.format ?? "?"),
    file: String(n.file ?? image.filename ?? ""),
    readOnly: Boolean(n.ro),
    virtualSize: isInt(image["virtual-size"]) ? image["virtual-size"] : null,
    backing: typeof n.backing_file === "string" ? n.backing_file : null,
  };
}

/** Flattens `query-pci` (bridges included) into one list. */
export function flattenPci(buses: Record<string, unknown>[]): PciInfo[] {
  const out: PciInfo[] = [];
  const walk = (devices: Obj[]) => {
    for (const d of devices) {
      const id = (d.id ?? {}) as Obj;
      const cls = (d.class_info ?? {}) as Obj;
      out.push({
        bus: Number(d.bus),
        slot: Number(d.slot),
        function: Number(d.function),
        class: String(cls.desc ?? `class ${hex(Number(cls.class ?? 0))}`),
        vendor: hex(Number(id.vendor ?? 0)),
        device: hex(Number(id.device ?? 0)),
        qdevId: typeof d.qdev_id === "string" && d.qdev_id !== "" ? d.qdev_id : null,
      });
      const bridge = d.pci_bridge as Obj | undefined;
      if (Array.isArray(bridge?.devices)) walk(bridge.devices as Obj[]);
    }
  };
  for (const bus of buses) if (Array.isArray(bus.devices)) walk(bus.devices as Obj[]);
  return out;
}

function hex(n: number): string {
  return n.toString(16).padStart(4, "0");
}

/**
 * Parses HMP `info network`:
 * `e1000.0: index=0,type=nic,model=e1000,macaddr=52:54:00:12:34:56` followed by
 * ` \ net0: index=0,type=user,...` for its peer.
 */
export function parseInfoNetwork(text: string): NetInfo[] {
  const out: NetInfo[] = [];
  const parseLine = (line: string) => {
    const m = /^\s*(?:\\\s*)?([^:\s]+):\s*(.*)$/.exec(line);
    if (!m) return undefined;
    const props: Record<string, string> = {};
    for (const part of m[2].split(",")) {
      const eq = part.indexOf("=");
      if (eq > 0) props[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
    }
    return { name: m[1], props };
  };
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "" || /^hub\s/i.test(line.trim())) continue;
    // Devices on a hub (no -nodefaults): " \ hub0port1: e1000e.0: ..." stand alone.
    const hub = /^\s*\\\s*(hub\d+port\d+):\s*(.*)$/.exec(line);
    if (hub) {
      const parsed = parseLine(hub[2]);
      if (parsed) out.push({ ...parsed, props: { ...parsed.props, hubport: hub[1] }, peer: null });
      continue;
    }
    const isPeer = /^\s*\\/.test(line);
    const parsed = parseLine(line);
    if (!parsed) continue;
    if (isPeer && out.length > 0 && out[out.length - 1].peer === null) {
      out[out.length - 1].peer = parsed;
    } else if (!isPeer) {
      out.push({ ...parsed, peer: null });
    }
  }
  return out;
}

/** Parses HMP `info usb`: `  Device 0.0, Port 1, Speed 480 Mb/s, Product QEMU USB Tablet[, ID: t0]`. */
export function parseInfoUsb(text: string): UsbInfo[] {
  const out: UsbInfo[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /Device (\S+), Port (\S+), Speed (.+?), Product (.*?)(?:, ID: (.*))?\s*$/.exec(line);
    if (m) {
      out.push({ address: m[1], port: m[2], speed: m[3], product: m[4], id: m[5] ?? null });
    }
  }
  return out;
}

/** A QAPI integer as qmpkit parses it: a number, or a bigint beyond 2^53. */
function isInt(v: unknown): v is number | bigint {
  return typeof v === "number" || typeof v === "bigint";
}

/** Formats a byte count: `64 MiB`, `1.5 GiB`, `512 B` (a bigint too: `1.0 EiB`). */
export function formatBytes(n: number | bigint): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

const NA = "n/a";

/** Renders the report as aligned text sections. */
export function formatInfo(r: InfoReport): string {
  const rows: [string, string[]][] = [];
  const add = (label: string, ...lines: string[]) => rows.push([label, lines]);
  const na = (part: string) => `${NA}${r.unavailable[part] ? ` (${r.unavailable[part]})` : ""}`;

  add(
    "QEMU",
    r.version
      ? `${r.version.qemu}${r.version.package ? ` (${r.version.package})` : ""}`
      : na("version"),
  );
  add("Address", r.address);
  add(
    "Status",
    r.status
      ? r.status.status +
        (r.status.running || r.status.status === "running" ? "" : " (vCPUs stopped)")
      : na("status"),
  );
  add("Name", r.name ?? (r.unavailable.name ? na("name") : "-"));
  add("UUID", r.uuid ?? na("uuid"));
  add(
    "Machine",
    r.machine
      ? [
        r.machine.type ?? "?",
        r.machine.alias ? `(alias ${r.machine.alias})` : "",
        r.machine.arch ? `arch ${r.machine.arch}` : "",
      ].filter(Boolean).join(", ").replace(", (", " (")
      : na("machine"),
  );
  add(
    "Accelerator",
    r.accelerator
      ? r.accelerator.name === "kvm"
        ? "KVM"
        : `TCG (KVM ${r.accelerator.kvmPresent ? "built in but not enabled" : "not built in"})`
      : na("accelerator"),
  );
  if (!r.cpus) add("CPUs", na("cpus"));
  else if (r.cpus.count === 0) add("CPUs", "none");
  else {
    add(
      "CPUs",
      `${r.cpus.count}${
        r.cpus.model ? ` x ${r.cpus.model.replace(/-x86_64-cpu$|-cpu$/, "")}` : ""
      }`,
      ...r.cpus.list.map((c) => {
        const topo = Object.entries(c.props).filter(([k]) => k !== "node-id")
          .map(([k, v]) => `${k.replace(/-id$/, "")} ${v}`).join(", ");
        return `  #${c.index}${c.thread !== null ? ` thread ${c.thread}` : ""}${
          topo ? ` (${topo})` : ""
        }`;
      }),
    );
  }
  add(
    "Memory",
    r.memory
      ? `${formatBytes(r.memory.base)}${
        r.memory.plugged ? ` + ${formatBytes(r.memory.plugged)} plugged` : ""
      }`
      : na("memory"),
  );
  if (!r.block) add("Block", na("block"));
  else if (r.block.length === 0) add("Block", "none");
  else {
    add(
      "Block",
      ...r.block.map((b) => {
        const name = b.device || shortQdev(b.qdev) || "?";
        const medium = b.inserted
          ? describeImage(b.inserted)
          : b.removable
          ? `empty${b.trayOpen ? " (tray open)" : ""}`
          : "no medium";
        return `${name}: ${medium}${b.device && b.qdev ? ` on ${shortQdev(b.qdev)}` : ""}`;
      }),
    );
  }
  if (r.blockNodes && r.blockNodes.length > 0) {
    const named = r.blockNodes.filter((n) => n.node && !n.node.startsWith("#"));
    add(
      "Block nodes",
      `${r.blockNodes.length} node${r.blockNodes.length === 1 ? "" : "s"}` +
        (named.length ? `; named: ${named.map((n) => `${n.node} (${n.driver})`).join(", ")}` : ""),
    );
  }
  if (!r.network) add("Network", na("network"));
  else if (r.network.length === 0) add("Network", "none");
  else {
    add(
      "Network",
      ...r.network.map((n) => {
        const p = n.props;
        const what = p.type === "nic" ? [p.model, p.macaddr].filter(Boolean).join(" ") : [
          p.type,
          ...Object.entries(p).filter(([k]) => !["type", "index", "hubport"].includes(k))
            .map(([k, v]) => `${k}=${v}`),
        ].join(" ");
        const peer = n.peer ? ` <-> ${n.peer.name} (${n.peer.props.type ?? "?"})` : "";
        const hub = p.hubport ? ` (on ${p.hubport.replace(/port\d+$/, "")})` : "";
        return `${n.name}: ${what}${peer}${hub}`;
      }),
    );
  }
  if (!r.pci) add("PCI", na("pci"));
  else if (r.pci.length === 0) add("PCI", "none");
  else {
    add(
      "PCI",
      ...r.pci.map((d) =>
        `${hex2(d.bus)}:${hex2(d.slot)}.${d.function} ${d.class} [${d.vendor}:${d.device}]` +
        (d.qdevId ? ` id=${d.qdevId}` : "")
      ),
    );
  }
  if (!r.usb) add("USB", na("usb"));
  else if (r.usb.length === 0) add("USB", "none");
  else {
    add(
      "USB",
      ...r.usb.map((u) =>
        `${u.address} port ${u.port}: ${u.product} (${u.speed})${u.id ? ` id=${u.id}` : ""}`
      ),
    );
  }
  if (!r.chardevs) add("Chardevs", na("chardevs"));
  else if (r.chardevs.length === 0) add("Chardevs", "none");
  else {
    add(
      "Chardevs",
      ...r.chardevs.map((c) => `${c.label}: ${c.filename}${c.frontendOpen ? "" : " (closed)"}`),
    );
  }
  add("Migration", r.migration ? describeMigration(r.migration) : na("migration"));

  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  const out: string[] = [];
  for (const [label, lines] of rows) {
    lines.forEach((line, i) =>
      out.push(`${i === 0 ? label.padEnd(width) : " ".repeat(width)}${line}`)
    );
  }
  return out.join("\n");
}

/** `/machine/peripheral/ID/virtio-backend` → `ID`; other paths unchanged. */
function shortQdev(qdev: string | null): string | null {
  const m = qdev ? /^\/machine\/peripheral\/([^/]+)(\/.*)?$/.exec(qdev) : null;
  return m ? m[1] : qdev;
}

function describeImage(img: ImageInfo): string {
  const extras = [
    img.virtualSize !== null ? formatBytes(img.virtualSize) : "",
    img.readOnly ? "read-only" : "",
    img.backing ? `backing ${img.backing}` : "",
    img.node && !img.node.startsWith("#") ? `node ${img.node}` : "",
  ].filter(Boolean);
  return `${img.driver} ${img.file}${extras.length ? ` (${extras.join(", ")})` : ""}`;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function describeMigration(m: { status: string; [key: string]: unknown }): string {
  const ram = m.ram as Obj | undefined;
  if (ram && isInt(ram.transferred) && isInt(ram.total)) {
    return `${m.status} (${formatBytes(ram.transferred)} of ${formatBytes(ram.total)} RAM)`;
  }
  return m.status;
}

/** Runs `qmp info` with `argv` (after the subcommand name); returns the exit code. */
export async function infoCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, {
    json: { type: "boolean" },
    pretty: { type: "boolean" },
    compact: { type: "boolean" },
    timeout: { type: "string" },
  });
  if (values.help) {
    writeOut(INFO_HELP + "\n");
    return EXIT_OK;
  }
  const address = takeAddress(values, positionals);
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const timeout = durationOption("timeout", (values.timeout as string | undefined) ?? "10s");
  return await withTarget(address, values, {}, async ({ client, address }) => {
    const runner: CommandRunner = {
      executeRaw: (command, args) => client.executeRaw(command, args, { timeout }),
    };
    const report = await gatherInfo(runner, address);
    if (values.json) {
      const pretty = values.pretty ? true : values.compact ? false : undefined;
      writeOut(toJson(report, pretty) + "\n");
    } else {
      writeOut(formatInfo(report) + "\n");
    }
    return EXIT_OK;
  });
}
