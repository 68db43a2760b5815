/**
 * `qmp run` / `deno task play`: runs playbook files against their own VMs or
 * an existing one, with live progress and machine-readable reports; shards
 * a run over CI machines (`--shard`), retries and repeats playbooks, selects
 * them by tag; `merge-reports` (scripts/cli/merge.ts) merges shards' blobs.
 *
 * Permissions: `--allow-read --allow-write --allow-net --allow-run --allow-env`
 * (read: playbook imports, the guest cache, PATH lookups; write: temp dirs,
 * `--record`, `--output`, QMP unix sockets, /dev/kvm; net: `--qmp tcp:`/`tls://`
 * addresses; run: QEMU, qemu-img, setpriv; env: HOME / QMPKIT_* / NO_COLOR / CI).
 *
 * @module
 */
import { killAllMachines, recordPath } from "../../lib/runner/engine.ts";
import { describeFailure } from "../../lib/runner/failure.ts";
import type { StepFilter } from "../../lib/runner/filter.ts";
import { InterruptedError, ReportOutputError } from "../../lib/runner/errors.ts";
import { listPlaybook } from "../../lib/runner/listing.ts";
import { createReporters, type Reporter } from "../../lib/runner/reporters.ts";
import {
  countResults,
  type PlaybookResult,
  resultsOk,
  type RunSummary,
  type StepResult,
} from "../../lib/runner/results.ts";
import { runPlaybooks, type RunUnit } from "../../lib/runner/scheduler.ts";
import { assignShards } from "../../lib/runner/shard.ts";
import { collectTimings, readTimings, writeTimings } from "../../lib/runner/timings.ts";
import { RUNNER_VERSION } from "../../lib/runner/version.ts";
import { writeErr, writeOut } from "./common.ts";
import { mergeCommand } from "./merge.ts";
import { type Item, loadItems, resolveItems } from "./run_items.ts";
import { listCommand } from "./run_list.ts";
import {
  ensureWritableDir,
  noMatchText,
  type Options,
  parseOptions,
  USAGE,
  UsageError,
  writesFiles,
} from "./run_options.ts";
import { onStopSignals, SIGNAL_EXIT_CODE, type StopSignal } from "./signals.ts";

function loadFailure(item: Item): PlaybookResult {
  return {
    name: item.display,
    file: item.display,
    status: "failed",
    durationMs: 0,
    steps: [],
    failure: describeFailure(item.loadError, "(load)", [], undefined),
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
}

function notRun(item: Item, reason: string, repeat?: number): PlaybookResult {
  return {
    name: item.playbook?.meta.name ?? item.display,
    file: item.display,
    status: "skipped",
    skipReason: reason,
    ...(item.playbook?.meta.tags?.length ? { tags: [...item.playbook.meta.tags] } : {}),
    ...(repeat !== undefined ? { repeat } : {}),
    durationMs: 0,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
}

/**
 * Runs the `run` command with its arguments (without the command name) and
 * resolves with the process exit code: 0 all passed (or flaky), 1 failures,
 * 2 usage error, 130 interrupted, 143 terminated.
 */
export async function runCommand(argv: string[]): Promise<number> {
  if (argv[0] === "merge-reports") return await mergeCommand(argv.slice(1));
  let opts: Options;
  try {
    const o = parseOptions(argv);
    if (o === "help") {
      writeOut(USAGE);
      return 0;
    }
    opts = o;
  } catch (e) {
    if (e instanceof UsageError) {
      writeErr(`error: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }

  const cwd = Deno.cwd();
  let items: Item[];
  let timings: Record<string, number> | undefined;
  try {
    items = await resolveItems(opts.files, cwd);
    // Private: 0700 when created here; the files inside are 0600 either way.
    if (opts.record) await ensureWritableDir("--record", opts.record, 0o700);
    if (!opts.list && writesFiles(opts.reporters)) await ensureWritableDir("--output", opts.output);
    if (opts.timings) timings = await readTimings(opts.timings);
  } catch (e) {
    writeErr(`error: ${e instanceof Error ? e.message : e}\n`);
    return 2;
  }

  // Load every playbook first: a file that throws at import fails on its own.
  await loadItems(items);

  const focused = items.filter((it) => it.playbook?.meta.only);
  if (opts.forbidOnly && focused.length > 0) {
    writeErr(
      `error: --forbid-only: playbook.only in ${focused.map((it) => it.display).join(", ")}\n` +
        "hint: playbook.only is for debugging on your machine; use playbook(...) before committing\n",
    );
    return 2;
  }
  // Selection: playbook.only, then --tag; load failures always stay (they are failures).
  let selected = items;
  if (focused.length > 0) selected = selected.filter((it) => !it.playbook || it.playbook.meta.only);
  if (opts.tags) {
    selected = selected.filter((it) => !it.playbook || opts.tags!.matches(it.playbook.meta.tags));
    if (selected.length === 0) {
      writeErr(
        `error: --tag ${opts.tagValues.join(" --tag ")} selects no playbook ` +
          `(of ${items.length})\nhint: --list shows each playbook's tags; ` +
          "includes are OR'ed, excludes (!tag) AND'ed\n",
      );
      return 2;
    }
  }
  // Sharding: over the selected set, so every shard computes the same split.
  let inShard = selected;
  if (opts.shard) {
    const shards = assignShards(selected.map((it) => it.key), opts.shard.total, timings);
    for (const it of selected) it.shard = shards.get(it.key);
    inShard = selected.filter((it) => it.shard === opts.shard!.index);
  }

  if (opts.list) return await listCommand(inShard, selected.length, opts);

  if (opts.shard) {
    writeErr(
      `shard ${opts.shard.index}/${opts.shard.total}: ${inShard.length} of ${selected.length} ` +
        `playbook${selected.length === 1 ? "" : "s"}` +
        `${timings ? " (balanced by recorded durations)" : ""}\n`,
    );
  }

  // Which playbooks --filter may select (listing runs each body without a VM).
  const selectable = await Promise.all(
    inShard.map((item) => !opts.filter || !item.playbook || mayMatch(item, opts.filter)),
  );
  if (
    opts.filter && inShard.length > 0 && inShard.every((it) => it.playbook) &&
    !selectable.some(Boolean)
  ) {
    writeErr(noMatchText(opts.filter, inShard.length));
    return 2;
  }

  let parallel = opts.parallel;
  if (opts.qmp && parallel > 1) {
    writeErr(
      `note: --qmp attaches to one VM, which serves one client at a time: --parallel ignored\n`,
    );
    parallel = 1;
  }
  if (opts.qmp && opts.retries > 0) {
    writeErr(`note: with --qmp, a retry runs against the same attached VM, not a fresh one\n`);
  }
  const reporter = cliWording(
    createReporters(opts.reporters, { parallel, verbose: opts.verbose, outputDir: opts.output }),
    opts,
  );
  const interrupt = new AbortController();
  let keptWaiter: (() => void) | undefined;
  // One Ctrl-C under `deno task` arrives as two SIGINTs: copies within a second are one.
  const signals = onStopSignals({
    stop(signal) {
      if (keptWaiter) {
        keptWaiter();
        return;
      }
      writeErr(
        `\n${signal === "SIGINT" ? "Interrupted" : "Terminated (SIGTERM)"}: aborting steps, ` +
          "running cleanups and stopping VMs (press Ctrl-C again to kill them at once)\n",
      );
      interrupt.abort(new InterruptedError(`The run (${interruptName(signal)})`));
    },
    force() {
      writeErr("Killing VMs.\n");
      keptWaiter?.();
      killAllMachines().finally(() => Deno.exit(SIGNAL_EXIT_CODE[signals.received!]));
    },
  });
  let strays = 0;
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    strays++;
    writeErr(`warning: unhandled promise rejection in a playbook: ${describe(e.reason)}\n`);
  };
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    strays++;
    writeErr(`warning: uncaught error in a playbook: ${describe(e.error ?? e.message)}\n`);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);

  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const taken = new Set<string>();
  const units: RunUnit[] = [];
  const unitItems: Item[] = [];
  inShard.forEach((item, i) => {
    for (let r = 0; r < opts.repeatEach; r++) {
      const repeat = opts.repeatEach > 1 ? r : undefined;
      // Repeats get NAME-2.jsonl, NAME-3.jsonl... (names are unique within the run).
      const recordFile = opts.record ? recordPath(opts.record, item.file, taken) : undefined;
      units.push({
        file: item.display,
        playbook: item.playbook,
        ...(repeat !== undefined ? { repeat } : {}),
        ...(recordFile ? { recordFile } : {}),
        ...(!item.playbook
          ? { result: loadFailure(item) }
          : opts.filter && !selectable[i]
          ? { result: notRun(item, `no step matches --filter ${opts.filter.source}`, repeat) }
          : {}),
      });
      unitItems.push(item);
    }
  });
  try {
    reporter.runStart?.(
      units.map((u) => ({ name: u.playbook?.meta.name ?? u.file, file: u.file })),
    );
    const outcome = await runPlaybooks(units, {
      qmp: opts.qmp,
      retry: opts.retry,
      tls: opts.tls,
      ssh: opts.ssh,
      timeout: opts.timeout,
      stepTimeout: opts.stepTimeout,
      filter: opts.filter,
      signal: interrupt.signal,
      keepVm: opts.keepVm,
      parallel,
      retries: opts.retries,
      bail: opts.bail,
      reporter,
    });

    const interrupted = interrupt.signal.aborted;
    const by = signals.received ? interruptName(signals.received) : "Ctrl-C";
    const final = units.map((u, i) =>
      outcome.results[i] ??
        notRun(
          unitItems[i],
          interrupted ? `not started: interrupted (${by})` : "not started: --bail",
          u.repeat,
        )
    );
    const counts = countResults(final);
    const keyOf = new Map(final.map((r, i) => [r, unitItems[i].key]));
    const runTimings = collectTimings(final, (r) => keyOf.get(r));
    const summary: RunSummary = {
      results: final,
      startedAt,
      durationMs: performance.now() - t0,
      interrupted,
      ...(interrupted ? { interruptedBy: by } : {}),
      counts,
      ok: !interrupted && strays === 0 && resultsOk(counts),
      ...(opts.shard ? { shard: opts.shard } : {}),
      runnerVersion: RUNNER_VERSION,
      timings: runTimings,
      config: {
        retries: opts.retries,
        repeatEach: opts.repeatEach,
        tags: opts.tagValues,
        parallel,
      },
    };
    try {
      await reporter.runEnd(summary);
    } catch (e) {
      if (!(e instanceof ReportOutputError)) throw e;
      writeErr(`error: ${e.message}\n`);
      return 2;
    }
    if (strays > 0) writeErr(`${strays} unhandled error(s) outside steps: the run fails\n`);
    if (opts.saveTimings) {
      try {
        await writeTimings(opts.saveTimings, runTimings);
      } catch (e) {
        writeErr(`error: --save-timings ${opts.saveTimings}: ${describe(e)}\n`);
        return 2;
      }
    }

    const kept = final.flatMap((r) => r.kept.map((k) => ({ ...k, playbook: r.name })));
    if (kept.length > 0 && !interrupted) {
      writeErr("\n--keep-vm: left running for debugging (QMP is free for your client):\n");
      for (const k of kept) {
        writeErr(`  ${k.playbook} [${k.label}]: pid ${k.pid}, QMP unix:${k.socketPath}\n`);
      }
      writeErr(
        `  e.g. socat - UNIX-CONNECT:${kept[0].socketPath}\n` +
          "Press Ctrl-C to stop the VM(s) and exit.\n",
      );
      await new Promise<void>((resolve) => (keptWaiter = resolve));
      await Promise.all(kept.map((k) => k.machine?.kill().catch(() => undefined)));
    }
    if (interrupted) return SIGNAL_EXIT_CODE[signals.received ?? "SIGINT"];
    if (opts.filter && strays === 0 && final.length > 0 && !final.some(selectedSomething)) {
      writeErr(noMatchText(opts.filter, inShard.length));
      return 2;
    }
    return summary.ok ? 0 : 1;
  } finally {
    signals.dispose();
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
    await killAllMachines();
  }
}

function interruptName(signal: StopSignal): string {
  return signal === "SIGINT" ? "Ctrl-C" : "SIGTERM";
}

/** True when the result ran something `--filter` selected (a skipped-by-filter one did not). */
function selectedSomething(r: PlaybookResult): boolean {
  const ran = (s: StepResult): boolean =>
    !(s.status === "skipped" && s.skipReason?.startsWith("filtered out by --filter")) ||
    s.steps.some(ran);
  return r.status !== "skipped" || r.steps.some(ran);
}

/**
 * The reporter, with library advice said in this command's terms: a failed
 * `--qmp` attach says "Use --retry", not the API's "Pass retry: true".
 */
function cliWording(reporter: Reporter, opts: Options): Reporter {
  const reword = (r: PlaybookResult) => {
    if (r.failure && opts.qmp) {
      r.failure.message = r.failure.message.replace(
        "Pass retry: true to wait",
        "Use --retry to wait",
      ).replace("the ssh option -o ", "--ssh-option ")
        .replace("the ssh options' identityFile", "--ssh-option IdentityFile=PATH")
        .replace("or name it in the ssh options' binary", "or put it on PATH");
    }
  };
  return {
    runStart: (p) => reporter.runStart?.(p),
    retrying: (p, a) => reporter.retrying?.(p, a),
    playbookStart: (p) => reporter.playbookStart?.(p),
    stepStart: (p, s) => reporter.stepStart?.(p, s),
    stepEnd: (p, s) => reporter.stepEnd?.(p, s),
    log: (p, e) => reporter.log?.(p, e),
    playbookEnd: (p, r) => {
      reword(r);
      reporter.playbookEnd?.(p, r);
    },
    runEnd: (s) => reporter.runEnd(s),
  };
}

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

async function mayMatch(item: Item, filter: StepFilter): Promise<boolean> {
  const listing = await listPlaybook(item.playbook!, { file: item.display, filter });
  return listing.matched || !listing.complete || listing.steps.some((s) => s.matched);
}
