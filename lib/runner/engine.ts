/**
 * The playbook engine: runs ONE playbook. Launches (or attaches to) the VM,
 * runs the body with its `t` (context.ts), keeps a ring of recent QMP messages
 * for failure reports, records transcripts, runs cleanups and stops every VM
 * it started. Running many (parallel, retries, bail) is scheduler.ts.
 *
 * @module
 */
import { stringifyJson } from "../json.ts";
import { redactText } from "../redact.ts";
import { join } from "node:path";
import { connect, type QmpClient, type TranscriptEntry } from "../client.ts";
import type { SshOptions } from "../ssh_transport.ts";
import { type Duration, parseDuration } from "../duration.ts";
import { launch, type Machine } from "../machine.ts";
import type { TlsOptions } from "../tls_transport.ts";
import { formatAddress, parseAddress } from "../address.ts";
import { type LibvirtDomain, startLibvirtDomain } from "../libvirt_domain.ts";
import { launchStorageDaemon, type StorageDaemon } from "../storage_daemon.ts";
import { isStorageDaemonVm } from "./playbook.ts";
import { Context } from "./context.ts";
import {
  PlaybookSkip,
  PlaybookTimeoutError,
  PlaybookUsageError,
  StepFailedError,
} from "./errors.ts";
import { consoleTail, describeFailure, errorText, qemuExit } from "./failure.ts";
import type { StepFilter } from "./filter.ts";
import type { Playbook } from "./playbook.ts";
import type {
  LogEntry,
  PlaybookInfo,
  PlaybookResult,
  RunObserver,
  StepResult,
  TranscriptRecord,
} from "./results.ts";

/** Options of {@link runPlaybook}. */
export interface RunPlaybookOptions {
  /** The file the playbook came from (for reports). */
  file?: string;
  /** Position in the run (for observers). */
  index?: number;
  /** Attach to this QMP address instead of launching `meta.vm`. */
  qmp?: string;
  /** With `qmp`: keep retrying while the socket does not exist yet (within the 10 s deadline). */
  retry?: boolean;
  /** With a `tls://` `qmp` address: its certificates (see `connect()`'s `tls`). */
  tls?: TlsOptions;
  /** With an `ssh://` `qmp` address: how to run ssh (config file, options). */
  ssh?: SshOptions;
  /** Playbook timeout; overrides `meta.timeout` (default `"5m"`). */
  timeout?: Duration;
  /** Default step timeout; overrides `meta.stepTimeout`. */
  stepTimeout?: Duration;
  /** Only run steps matching this filter (see {@link parseFilter}). */
  filter?: StepFilter;
  /** Interrupts the run (Ctrl-C): aborts `t.signal`, then cleanups run and VMs stop. */
  signal?: AbortSignal;
  /** On failure, leave launched VMs running (QMP disconnected) and skip cleanups. */
  keepVm?: boolean;
  /** Write every QMP message (secrets redacted) to this JSONL file, created afresh with mode 0600. */
  recordFile?: string;
  /** How many recent QMP messages failure reports show (default 10). */
  ringSize?: number;
  /** Receives live progress. */
  observer?: RunObserver;
}

const liveDomains = new Set<LibvirtDomain>();
const liveMachines = new Set<Machine | StorageDaemon>();
const liveTempDirs = new Set<string>();

/**
 * Kills (SIGKILL) every VM the engine launched that is still running, destroys
 * the libvirt domains it started, and removes the playbook temp dirs still
 * there (kept with a `--keep-vm` VM, or left by a run stopped at once).
 */
export async function killAllMachines(): Promise<void> {
  await Promise.all([
    ...[...liveMachines].map((m) => m.kill().catch(() => undefined)),
    ...[...liveDomains].map((d) => d.destroy().catch(() => undefined)),
  ]);
  liveMachines.clear();
  liveDomains.clear();
  await Promise.all(
    [...liveTempDirs].map((d) => Deno.remove(d, { recursive: true }).catch(() => undefined)),
  );
  liveTempDirs.clear();
}

const encoder = new TextEncoder();

/**
 * Runs one playbook and resolves with its result; never rejects for a
 * playbook failure. Launches `meta.vm` (or attaches to `options.qmp`), runs
 * the body, then the cleanups, then stops the VMs it launched.
 */
export async function runPlaybook(
  pb: Playbook,
  options: RunPlaybookOptions = {},
): Promise<PlaybookResult> {
  const name = pb.meta.name;
  const info: PlaybookInfo = { index: options.index ?? 0, name, file: options.file };
  const observer = options.observer ?? {};
  const result: PlaybookResult = {
    name,
    ...(options.file ? { file: options.file } : {}),
    status: "passed",
    ...(pb.meta.tags?.length ? { tags: [...pb.meta.tags] } : {}),
    startedAt: new Date().toISOString(),
    durationMs: 0,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
  const t0 = performance.now();
  let skipped: string | undefined;
  observer.playbookStart?.(info);
  if (pb.meta.skip) {
    result.status = "skipped";
    result.skipReason = typeof pb.meta.skip === "string" ? pb.meta.skip : "playbook.skip";
    observer.playbookEnd?.(info, result);
    return result;
  }

  const ringSize = options.ringSize ?? 10;
  const ring: TranscriptRecord[] = [];
  let record: Deno.FsFile | undefined;
  if (options.recordFile) {
    record = await openPrivateFile(options.recordFile);
    result.recording = options.recordFile;
  }
  const transcript = (vm: string, address?: string) => (entry: TranscriptEntry) => {
    const rec: TranscriptRecord = {
      time: entry.time.toISOString(),
      vm,
      ...(address !== undefined ? { address } : {}),
      direction: entry.direction,
      message: entry.message,
    };
    ring.push(rec);
    if (ring.length > ringSize) ring.shift();
    if (record) {
      try {
        record.writeSync(encoder.encode(stringifyJson(rec) + "\n"));
      } catch { /* best effort */ }
    }
  };
  const log = (source: LogEntry["source"], path: string[], message: string) => {
    const entry: LogEntry = {
      time: new Date().toISOString(),
      path,
      source,
      message: redactText(message),
    };
    result.logs.push(entry);
    observer.log?.(info, entry);
  };

  const ctl = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, ctl.signal]) : ctl.signal;
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(options.timeout ?? pb.meta.timeout ?? "5m");
  } catch (e) {
    timeoutMs = 300_000;
    result.failure = describeFailure(e, "(playbook)", [], undefined);
  }
  const timer = setTimeout(() => ctl.abort(new PlaybookTimeoutError(name, timeoutMs)), timeoutMs);

  const tempDir = await Deno.makeTempDir({ prefix: "qmpkit-play-" });
  liveTempDirs.add(tempDir);
  const machines: { label: string; machine: Machine }[] = [];
  let domain: LibvirtDomain | undefined;
  let daemon: StorageDaemon | undefined;
  let client: QmpClient | undefined;
  let ctx: Context | undefined;
  const playbookMatched = !options.filter ||
    options.filter.matches(name) ||
    (options.file !== undefined && options.filter.matches(options.file));

  if (!result.failure) {
    try {
      if (options.qmp) {
        client = await connect(options.qmp, {
          timeout: "10s",
          retry: options.retry === true,
          ssh: options.ssh,
          signal,
          transcript: transcript("vm", formatAddress(parseAddress(options.qmp))),
          ...(options.tls ? { tls: options.tls } : {}),
        });
        log("runner", [], `attached to ${client.address}`);
      } else if (pb.meta.vm && "libvirt" in pb.meta.vm) {
        domain = await startLibvirtDomain({
          ...pb.meta.vm.libvirt,
          signal,
          qmp: { transcript: transcript("vm") },
        });
        liveDomains.add(domain);
        client = domain.qmp;
        log("vm", [], `started libvirt domain ${domain.name} (${domain.address})`);
      } else if (isStorageDaemonVm(pb.meta.vm)) {
        const { storageDaemon: _, ...daemonOptions } = pb.meta.vm;
        daemon = await launchStorageDaemon({
          ...daemonOptions,
          signal,
          log: (m) => log("vm", [], m),
          qmp: { transcript: transcript("vm") },
        });
        liveMachines.add(daemon);
        // One connection; the body sees it typed for the daemon's schema.
        client = daemon.qmp as unknown as QmpClient;
      } else if (pb.meta.vm) {
        const machine = await launch({
          ...pb.meta.vm,
          signal,
          log: (m) => log("vm", [], m),
          qmp: { transcript: transcript("vm") },
        });
        liveMachines.add(machine);
        machines.push({ label: "vm", machine });
        client = machine.qmp;
      } else {
        throw new PlaybookUsageError(
          `Playbook "${name}" has no vm in its meta, so it can only run against an existing VM: ` +
            `pass --qmp ADDRESS, or add e.g. vm: { machine: "pc", paused: true }`,
        );
      }
      ctx = new Context({
        name,
        file: options.file,
        qmp: client,
        machine: machines[0]?.machine,
        domain,
        daemon,
        attachedTo: options.qmp ? client.address : undefined,
        tempDir,
        root: { path: [], signal, children: result.steps, matched: playbookMatched },
        filter: options.filter,
        stepTimeout: options.stepTimeout ?? pb.meta.stepTimeout,
        observer,
        info,
        t0,
        log,
        ring,
        transcript,
        machines,
        track: (m) => liveMachines.add(m),
      });
      await ctx.runBody(pb.fn);
    } catch (e) {
      if (e instanceof PlaybookSkip) skipped = e.reason;
      else if (!(e instanceof StepFailedError)) {
        result.failure = describeFailure(e, "(playbook)", ring, consoleTail(machines[0]?.machine));
        const exit = await qemuExit(e, machines[0]?.machine ?? daemon);
        if (exit) result.failure.qemuExit = exit;
      }
    }
  }
  clearTimeout(timer);
  if (ctx) ctx.finished = true;

  const interrupted = options.signal?.aborted === true;
  const failedSoFar = result.failure !== undefined || result.steps.some(failedStep);
  const keep = options.keepVm === true && failedSoFar && !interrupted &&
    machines.some((m) => m.machine.running);
  if (ctx) {
    if (keep) {
      if (ctx.cleanupCount > 0) {
        log(
          "runner",
          [],
          `--keep-vm: ${ctx.cleanupCount} cleanup(s) not run, VM left as it failed`,
        );
      }
    } else {
      result.cleanupFailures = await ctx.runCleanups(interrupted ? 10_000 : 30_000, interrupted);
    }
  }

  if (daemon) {
    // --keep-vm keeps VMs only: a daemon is always stopped.
    try {
      await daemon.shutdown({ quitTimeout: "5s", termTimeout: "3s" });
    } catch (e) {
      log("runner", [], `stopping ${daemon.name} failed: ${errorText(e)}`);
      await daemon.kill().catch(() => undefined);
    }
    liveMachines.delete(daemon);
  }

  if (keep) {
    for (const { label, machine } of machines) {
      if (!machine.running) continue;
      await machine.qmp.close();
      const agentSocketPath = machine.agentSocketPath;
      if (agentSocketPath) await machine.agent.close(); // free the socket for `qmp agent`
      result.kept.push({
        label,
        pid: machine.pid,
        socketPath: machine.socketPath,
        ...(agentSocketPath ? { agentSocketPath } : {}),
        machine,
      });
    }
  } else {
    for (const { machine } of [...machines].reverse()) {
      try {
        await machine.shutdown({ powerdown: false, quitTimeout: "5s", termTimeout: "3s" });
      } catch (e) {
        log("runner", [], `stopping ${machine.name} failed: ${errorText(e)}`);
        await machine.kill().catch(() => undefined);
      }
      liveMachines.delete(machine);
    }
    await Deno.remove(tempDir, { recursive: true }).catch(() => undefined);
    liveTempDirs.delete(tempDir);
  }
  if (domain) {
    // Started with autodestroy: it cannot outlive this process, so --keep-vm does not keep it.
    try {
      await domain.destroy();
      log("runner", [], `destroyed libvirt domain ${domain.name}`);
    } catch (e) {
      log("runner", [], `destroying libvirt domain ${domain.name} failed: ${errorText(e)}`);
    }
    liveDomains.delete(domain);
  }
  if (options.qmp && client) await client.close();
  record?.close();

  result.durationMs = performance.now() - t0;
  if (interrupted) result.status = "interrupted";
  else if (
    result.failure || result.cleanupFailures.length > 0 || result.steps.some(failedStep)
  ) {
    result.status = "failed";
  } else if (skipped !== undefined) {
    result.status = "skipped";
    result.skipReason = skipped;
  } else if (
    options.filter && !playbookMatched && result.steps.length > 0 &&
    result.steps.every((s) => s.status === "skipped")
  ) {
    result.status = "skipped";
    result.skipReason = `no step matches --filter ${options.filter.source}`;
  }
  observer.playbookEnd?.(info, result);
  return result;
}

function failedStep(s: StepResult): boolean {
  return s.status === "failed";
}

/** The `--record` file name for a playbook file: `DIR/<name>.jsonl`, unique within `taken`. */
export function recordPath(dir: string, file: string, taken: Set<string>): string {
  const base = (file.split("/").pop() ?? "playbook").replace(/\.playbook\.[cm]?[jt]sx?$/, "")
    .replace(/\.[cm]?[jt]sx?$/, "").replace(/[^\w.-]+/g, "_") || "playbook";
  let candidate = join(dir, `${base}.jsonl`);
  for (let i = 2; taken.has(candidate); i++) candidate = join(dir, `${base}-${i}.jsonl`);
  taken.add(candidate);
  return candidate;
}

/**
 * Creates `path` afresh, mode 0600: an old file (or a symlink planted in its
 * place) is removed first, and the new one is created exclusively.
 */
async function openPrivateFile(path: string): Promise<Deno.FsFile> {
  await Deno.remove(path).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  return await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
}
