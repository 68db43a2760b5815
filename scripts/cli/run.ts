/**
 * `qmp run` / `deno task play`: runs playbook files against their own VMs or
 * an existing one, with live progress and machine-readable reports.
 *
 * Permissions: `--allow-read --allow-write --allow-net --allow-run --allow-env`
 * (read: playbook imports, the guest cache, PATH lookups; write: temp dirs,
 * `--record`, QMP unix sockets, /dev/kvm; net: `--qmp tcp:` addresses; run:
 * QEMU, qemu-img, setpriv; env: HOME / QMPKIT_* / NO_COLOR).
 *
 * @module
 */
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { parseDuration } from "../../lib/duration.ts";
import { parseAddress } from "../../lib/address.ts";
import type { SshOptions } from "../../lib/ssh_transport.ts";
import { sshFlags } from "./ssh_flags.ts";
import { displayPath, playbookFromModule, resolvePlaybooks } from "../../lib/runner/discover.ts";
import {
  describeFailure,
  killAllMachines,
  parseFilter,
  type PlaybookResult,
  recordPath,
  runPlaybook,
  type StepFilter,
  type StepResult,
  stripAnsi,
} from "../../lib/runner/engine.ts";
import { InterruptedError, PlaybookLoadError } from "../../lib/runner/errors.ts";
import { listPlaybook, type PlaybookListing } from "../../lib/runner/listing.ts";
import type { Playbook } from "../../lib/runner/playbook.ts";
import {
  countResults,
  createReporter,
  type Reporter,
  type ReporterName,
  type RunSummary,
} from "../../lib/runner/reporters.ts";
import { onStopSignals, SIGNAL_EXIT_CODE, type StopSignal } from "./signals.ts";

const USAGE = `Usage: deno task play [options] <playbook|dir|name>...
       qmp run [options] <playbook|dir|name>...

Runs playbooks (files exporting playbook(meta, fn) as default). Each argument is a
file, a directory (every *.playbook.ts below it) or a name (lifecycle →
examples/lifecycle.playbook.ts). Each playbook gets its own VM (meta.vm) unless --qmp.

Options:
  --qmp ADDRESS        attach to an existing VM (unix:/path, tcp:host:port, or
                       ssh://[user@]host[:port]/path for a remote one) instead of launching
                       one; playbooks then run one at a time and t.vm is unavailable
  --retry              with --qmp: keep retrying while the socket does not exist yet (up to 10s)
  --ssh-config FILE    with --qmp ssh://: the ssh client config file (ssh -F FILE)
  --ssh-option OPT     with --qmp ssh://: an ssh option (ssh -o OPT, e.g.
                       StrictHostKeyChecking=accept-new); repeatable
  --filter TEXT        only playbooks/steps whose name or path ("block › backup") contains
                       TEXT; /regex/flags for a regular expression
  --timeout DURATION   limit per playbook, e.g. 90s, 5m (overrides meta.timeout; default 5m)
  --step-timeout DUR   default limit per step (overrides meta.stepTimeout)
  --bail               stop after the first failed playbook
  --parallel N         run up to N playbooks at once, each on its own VM (default 1)
  --keep-vm            on failure, leave the VM running (cleanups skipped), print its QMP
                       socket and pid, and wait for Ctrl-C
  --record DIR         write every QMP message of each playbook to DIR/<name>.jsonl
  --reporter NAME      pretty (default, on stderr) | json | junit | tap (on stdout)
  --list               list playbooks and their top-level steps without running them
  -v, --verbose        show whole stack traces and cause chains of failures
  -h, --help           show this help

Ctrl-C (or SIGTERM) stops the run: steps are aborted, cleanups run, VMs stop and the
summary is printed. Ctrl-C again (a second or more later) kills the VMs at once.

Exit status: 0 all passed, 1 failures, 2 usage error or a --filter that selects nothing,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
`;

const REPORTERS: readonly ReporterName[] = ["pretty", "json", "junit", "tap"];
const PROJECT_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const encoder = new TextEncoder();

function writeErr(text: string): void {
  let data = encoder.encode(text);
  while (data.length > 0) data = data.subarray(Deno.stderr.writeSync(data));
}

function writeOut(text: string): void {
  let data = encoder.encode(text);
  while (data.length > 0) data = data.subarray(Deno.stdout.writeSync(data));
}

class UsageError extends Error {}

interface Options {
  files: string[];
  qmp?: string;
  filter?: StepFilter;
  timeout?: string;
  stepTimeout?: string;
  bail: boolean;
  parallel: number;
  keepVm: boolean;
  record?: string;
  reporter: ReporterName;
  list: boolean;
  verbose: boolean;
  retry: boolean;
  ssh?: SshOptions;
}

function parseOptions(argv: string[]): Options | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        qmp: { type: "string" },
        retry: { type: "boolean", default: false },
        "ssh-config": { type: "string" },
        "ssh-option": { type: "string", multiple: true },
        filter: { type: "string" },
        timeout: { type: "string" },
        "step-timeout": { type: "string" },
        bail: { type: "boolean", default: false },
        parallel: { type: "string" },
        "keep-vm": { type: "boolean", default: false },
        record: { type: "string" },
        reporter: { type: "string", default: "pretty" },
        list: { type: "boolean", default: false },
        verbose: { type: "boolean", short: "v", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values;
  if (v.help) return "help";
  const reporter = v.reporter as ReporterName;
  if (!REPORTERS.includes(reporter)) {
    throw new UsageError(`--reporter must be one of ${REPORTERS.join(", ")}, got "${v.reporter}"`);
  }
  let parallel = 1;
  if (v.parallel !== undefined) {
    parallel = Number(v.parallel);
    if (!Number.isInteger(parallel) || parallel < 1) {
      throw new UsageError(`--parallel must be a positive integer, got "${v.parallel}"`);
    }
  }
  for (const [flag, value] of [["--timeout", v.timeout], ["--step-timeout", v["step-timeout"]]]) {
    if (value === undefined) continue;
    try {
      if (parseDuration(value) <= 0) throw new RangeError("must be positive");
    } catch (e) {
      throw new UsageError(`${flag}: ${e instanceof Error ? e.message : e}`);
    }
  }
  if (v.qmp !== undefined) {
    try {
      parseAddress(v.qmp);
    } catch (e) {
      throw new UsageError(`--qmp: ${e instanceof Error ? e.message : e}`);
    }
  }
  let filter: StepFilter | undefined;
  if (v.filter !== undefined) {
    try {
      filter = parseFilter(v.filter);
    } catch (e) {
      throw new UsageError(`--filter: ${e instanceof Error ? e.message : e}`);
    }
  }
  let ssh: SshOptions | undefined;
  try {
    ssh = sshFlags(v.qmp, v["ssh-config"], v["ssh-option"]);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  if (v.retry && v.qmp === undefined) {
    throw new UsageError("--retry applies to --qmp (each playbook launches its own VM otherwise)");
  }
  if (parsed.positionals.length === 0) {
    throw new UsageError("no playbooks given (e.g. deno task play examples/)");
  }
  return {
    files: parsed.positionals,
    qmp: v.qmp,
    filter,
    timeout: v.timeout,
    stepTimeout: v["step-timeout"],
    bail: v.bail,
    parallel,
    keepVm: v["keep-vm"],
    record: v.record,
    reporter,
    list: v.list,
    verbose: v.verbose,
    retry: v.retry,
    ssh,
  };
}

interface Item {
  file: string;
  display: string;
  playbook?: Playbook;
  loadError?: unknown;
}

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

function notRun(item: Item, reason: string): PlaybookResult {
  return {
    name: item.playbook?.meta.name ?? item.display,
    file: item.display,
    status: "skipped",
    skipReason: reason,
    durationMs: 0,
    steps: [],
    cleanupFailures: [],
    logs: [],
    kept: [],
  };
}

/**
 * Runs the `run` command with its arguments (without the command name) and
 * resolves with the process exit code: 0 all passed, 1 failures, 2 usage
 * error, 130 interrupted.
 */
export async function runCommand(argv: string[]): Promise<number> {
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
  let files: string[];
  try {
    files = await resolvePlaybooks(opts.files, { cwd, roots: [PROJECT_ROOT] });
  } catch (e) {
    writeErr(`error: ${e instanceof Error ? e.message : e}\n`);
    return 2;
  }
  if (opts.record) {
    try {
      await Deno.mkdir(opts.record, { recursive: true });
    } catch (e) {
      writeErr(`error: --record ${opts.record}: ${e instanceof Error ? e.message : e}\n`);
      return 2;
    }
  }

  // Load every playbook first: a file that throws at import fails on its own.
  const items: Item[] = [];
  for (const file of files) {
    const display = displayPath(file, cwd);
    try {
      items.push({ file, display, playbook: await loadPlaybook(file, display) });
    } catch (e) {
      items.push({ file, display, loadError: e });
    }
  }

  if (opts.list) return await listCommand(items, opts);

  // Which playbooks --filter may select (listing runs each body without a VM).
  const selectable = await Promise.all(
    items.map((item) => !opts.filter || !item.playbook || mayMatch(item, opts.filter)),
  );
  if (opts.filter && items.every((it) => it.playbook) && !selectable.some(Boolean)) {
    writeErr(noMatchText(opts.filter, items.length));
    return 2;
  }

  let parallel = opts.parallel;
  if (opts.qmp && parallel > 1) {
    writeErr(
      `note: --qmp attaches to one VM, which serves one client at a time: --parallel ignored\n`,
    );
    parallel = 1;
  }
  const reporter = cliWording(
    createReporter(opts.reporter, { parallel, verbose: opts.verbose }),
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

  const t0 = performance.now();
  const results: (PlaybookResult | undefined)[] = new Array(items.length);
  const taken = new Set<string>();
  const recordFiles = items.map((it) =>
    opts.record ? recordPath(opts.record, it.file, taken) : undefined
  );
  let bailed = false;
  try {
    reporter.runStart?.(
      items.map((it) => ({ name: it.playbook?.meta.name ?? it.display, file: it.display })),
    );
    let next = 0;
    const worker = async () => {
      while (!bailed && !interrupt.signal.aborted) {
        const i = next++;
        if (i >= items.length) return;
        const item = items[i];
        let result: PlaybookResult;
        if (!item.playbook) {
          result = loadFailure(item);
          reporter.playbookStart?.({ index: i, name: result.name, file: item.display });
          reporter.playbookEnd?.({ index: i, name: result.name, file: item.display }, result);
        } else if (opts.filter && !selectable[i]) {
          result = notRun(item, `no step matches --filter ${opts.filter.source}`);
        } else {
          result = await runPlaybook(item.playbook, {
            file: item.display,
            index: i,
            qmp: opts.qmp,
            retry: opts.retry,
            ssh: opts.ssh,
            timeout: opts.timeout,
            stepTimeout: opts.stepTimeout,
            filter: opts.filter,
            signal: interrupt.signal,
            keepVm: opts.keepVm,
            recordFile: recordFiles[i],
            observer: reporter,
          });
        }
        results[i] = result;
        if (opts.bail && (result.status === "failed" || result.status === "interrupted")) {
          bailed = true;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));

    const interrupted = interrupt.signal.aborted;
    const by = signals.received ? interruptName(signals.received) : "Ctrl-C";
    const final = items.map((item, i) =>
      results[i] ??
        notRun(item, interrupted ? `not started: interrupted (${by})` : "not started: --bail")
    );
    const counts = countResults(final);
    const summary: RunSummary = {
      results: final,
      durationMs: performance.now() - t0,
      interrupted,
      ...(interrupted ? { interruptedBy: by } : {}),
      counts,
      ok: !interrupted && strays === 0 && counts.playbooks.failed === 0 &&
        counts.playbooks.interrupted === 0,
    };
    await reporter.runEnd(summary);
    if (strays > 0) writeErr(`${strays} unhandled error(s) outside steps: the run fails\n`);

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
      await Promise.all(kept.map((k) => k.machine.kill().catch(() => undefined)));
    }
    if (interrupted) return SIGNAL_EXIT_CODE[signals.received ?? "SIGINT"];
    if (opts.filter && strays === 0 && !final.some(selectedSomething)) {
      writeErr(noMatchText(opts.filter, items.length));
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

/**
 * Imports a playbook file (dynamic `import()` of its file URL: needs --allow-read)
 * and returns its default export; throws {@link PlaybookLoadError} naming the file.
 */
async function loadPlaybook(file: string, display: string): Promise<Playbook> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    throw new PlaybookLoadError(display, `failed to load: ${importErrorText(e)}`, { cause: e });
  }
  return playbookFromModule(mod, display);
}

/**
 * One line for an error thrown while importing a playbook: Deno's message
 * without colours or code frame (`TypeError: SyntaxError: ...` becomes
 * `SyntaxError: ...`), and where it happened (`at dir/x.playbook.ts:2:58`).
 */
function importErrorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const message = stripAnsi(e.message);
  const first = message.split("\n")[0].trim();
  const text = /^[A-Z]\w*Error: /.test(first) ? first : `${e.name}: ${first}`;
  const at = /^\s*at (?:.*\()?(file:\/\/[^\s)]+?):(\d+):(\d+)\)?\s*$/m.exec(
    `${message}\n${stripAnsi(e.stack ?? "")}`,
  );
  if (!at) return text;
  let where = at[1];
  try {
    where = displayPath(fileURLToPath(at[1]));
  } catch { /* keep the URL */ }
  return `${text} (at ${where}:${at[2]}:${at[3]})`;
}

function interruptName(signal: StopSignal): string {
  return signal === "SIGINT" ? "Ctrl-C" : "SIGTERM";
}

function noMatchText(filter: StepFilter, files: number): string {
  return `error: --filter ${filter.source} matches no playbook or step ` +
    `(in ${files} playbook file${files === 1 ? "" : "s"})\n` +
    "hint: --list shows playbook and step names; --filter is a case-sensitive substring " +
    "of a name or step path, or /regex/flags\n";
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

async function listCommand(items: Item[], opts: Options): Promise<number> {
  const listings: PlaybookListing[] = [];
  const errors: { file: string; message: string }[] = [];
  for (const item of items) {
    if (!item.playbook) {
      errors.push({ file: item.display, message: describe(item.loadError) });
      continue;
    }
    const l = await listPlaybook(item.playbook, { file: item.display, filter: opts.filter });
    if (opts.filter && !l.matched && l.complete && !l.steps.some((s) => s.matched)) continue;
    if (opts.filter && !l.matched) l.steps = l.steps.filter((s) => s.matched);
    listings.push(l);
  }
  if (opts.reporter === "json") {
    writeOut(JSON.stringify({ version: 1, playbooks: listings, errors }, null, 2) + "\n");
  } else {
    const lines: string[] = [];
    for (const l of listings) {
      lines.push(`${l.name}  (${l.file})`);
      if (l.description) lines.push(`  ${l.description}`);
      for (const s of l.steps) lines.push(`  • ${s.name}${s.skip ? `  (skip: ${s.skip})` : ""}`);
      if (l.steps.length === 0) lines.push("  (no top-level steps)");
      if (!l.complete) lines.push(`  … ${l.note}`);
    }
    if (listings.length > 0) {
      lines.push(
        "",
        "Top-level steps only: nested steps run inside step bodies and are listed when run.",
      );
    }
    for (const e of errors) lines.push(`error: ${e.message}`);
    if (lines.length > 0) writeOut(lines.join("\n") + "\n");
  }
  if (errors.length > 0) return 1;
  if (opts.filter && listings.length === 0) {
    writeErr(noMatchText(opts.filter, items.length));
    return 2;
  }
  return 0;
}
