/**
 * The `play` command line: usage text and option parsing (strict; a usage
 * error exits 2).
 *
 * @module
 */
import type { TlsOptions } from "../../lib/tls_transport.ts";
import { parseArgs } from "node:util";
import { parseAddress } from "../../lib/address.ts";
import type { SshOptions } from "../../lib/ssh_transport.ts";
import { sshFlags } from "./ssh_flags.ts";
import { parseDuration } from "../../lib/duration.ts";
import { parseFilter, type StepFilter } from "../../lib/runner/filter.ts";
import {
  FILE_REPORTERS,
  REPORTER_NAMES,
  type ReporterName,
  STDOUT_REPORTERS,
} from "../../lib/runner/reporters.ts";
import type { ShardSpec } from "../../lib/runner/results.ts";
import { parseShard } from "../../lib/runner/shard.ts";
import { parseTags, type TagFilter } from "../../lib/runner/tags.ts";

/** `play --help`. */
export const USAGE = `Usage: deno task play [options] <playbook|dir|name>...
       deno task play merge-reports [options] <blob-dir|blob-file>...
       qmp run [options] <playbook|dir|name>...

Runs playbooks (files exporting playbook(meta, fn) as default). Each argument is a
file, a directory (every *.playbook.ts below it) or a name (lifecycle →
examples/lifecycle.playbook.ts). Each playbook gets its own VM (meta.vm) unless --qmp.

Options:
  --qmp ADDRESS        attach to an existing VM (unix:/path, tcp:host:port, tls://host:port, or
                       ssh://[user@]host[:port]/path for a remote one) instead of launching
                       one; playbooks then run one at a time and t.vm is unavailable
  --retry              with --qmp: keep retrying while the socket does not exist yet (up to 10s)
  --tls-ca FILE        with --qmp tls://: the CA that signed QEMU's certificate (its ca-cert.pem)
  --tls-cert FILE      with --qmp tls://: client certificate (monitor with verify-peer=on)
  --tls-key FILE       with --qmp tls://: the client certificate's private key
  --tls-hostname NAME  with --qmp tls://: the name QEMU's certificate must carry, if not HOST
  --ssh-config FILE    with --qmp ssh://: the ssh client config file (ssh -F FILE)
  --ssh-option OPT     with --qmp ssh://: an ssh option (ssh -o OPT, e.g.
                       StrictHostKeyChecking=accept-new); repeatable
  --filter TEXT        only playbooks/steps whose name or path ("block › backup") contains
                       TEXT; /regex/flags for a regular expression
  --tag TAG            only playbooks tagged TAG; --tag !TAG leaves out those tagged TAG.
                       Repeatable: includes are OR'ed, excludes AND'ed
  --forbid-only        fail (exit 2) if a playbook is marked playbook.only (for CI)
  --timeout DURATION   limit per playbook, e.g. 90s, 5m (overrides meta.timeout; default 5m)
  --step-timeout DUR   default limit per step (overrides meta.stepTimeout)
  --retries N          re-run a failed playbook on a fresh VM up to N times; one that
                       passes on a retry is reported as flaky (exit status 0)
  --repeat-each N      run each playbook N times (to hunt flaky ones)
  --bail               stop after the first failed playbook
  --parallel N         run up to N playbooks at once, each on its own VM (default 1)
  --shard I/N          run only shard I of N (1 ≤ I ≤ N): a deterministic split by path,
                       balanced by --timings when given; merge the shards' blob reports
                       with merge-reports
  --timings PATH       durations of an earlier run for balancing shards: a --save-timings
                       file, a blob report, or a directory of blob reports
  --save-timings FILE  write this run's durations per playbook to FILE
  --keep-vm            on failure, leave the VM running (cleanups skipped), print its QMP
                       socket and pid, and wait for Ctrl-C
  --record DIR         write every QMP message of each playbook to DIR/<name>.jsonl
  --reporter NAMES     pretty (default, on stderr) | json | junit | tap (on stdout) |
                       blob (a file in --output) | html (DIR/index.html in --output);
                       several with commas: pretty,blob
  --output DIR         where file reporters write (default qmpkit-report): blob writes
                       DIR/blob.json, or DIR/blob-I-of-N.json with --shard
  --list               list playbooks (tags, skips, shard) and their top-level steps
                       without running them
  -v, --verbose        show whole stack traces and cause chains of failures
  -h, --help           show this help

On a terminal a status line shows playbooks done / running / failed and the elapsed
time; with NO_COLOR or CI set, or off a terminal, plain progress lines instead.

Ctrl-C (or SIGTERM) stops the run: steps are aborted, cleanups run, VMs stop and the
summary is printed. Ctrl-C again (a second or more later) kills the VMs at once.

Exit status: 0 all passed (flaky ones included), 1 failures, 2 usage error, a --filter
or --tag that selects nothing, or playbook.only with --forbid-only, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
`;

/** A command-line mistake: printed with the usage, exit 2. */
export class UsageError extends Error {}

/** The parsed `play` options. */
export interface Options {
  files: string[];
  qmp?: string;
  filter?: StepFilter;
  tags?: TagFilter;
  tagValues: string[];
  forbidOnly: boolean;
  timeout?: string;
  stepTimeout?: string;
  retries: number;
  repeatEach: number;
  bail: boolean;
  parallel: number;
  shard?: ShardSpec;
  timings?: string;
  saveTimings?: string;
  keepVm: boolean;
  record?: string;
  reporters: ReporterName[];
  output: string;
  list: boolean;
  verbose: boolean;
  retry: boolean;
  /** Certificates for a `--qmp tls://` address. */
  tls?: TlsOptions;
  /** With an `ssh://` `--qmp`: `--ssh-config` / `--ssh-option`. */
  ssh?: SshOptions;
}

/** Parses `--reporter a,b`; throws {@link UsageError}. */
export function parseReporters(
  text: string,
  allowed: readonly string[] = REPORTER_NAMES,
): ReporterName[] {
  const names = text.split(",").map((n) => n.trim()).filter((n) => n !== "");
  if (names.length === 0) throw new UsageError(`--reporter needs a name`);
  for (const n of names) {
    if (!allowed.includes(n)) {
      throw new UsageError(`--reporter must be one of ${allowed.join(", ")}, got "${n}"`);
    }
  }
  const toStdout = names.filter((n) => STDOUT_REPORTERS.includes(n as ReporterName));
  if (toStdout.length > 1) {
    throw new UsageError(
      `--reporter ${text}: ${toStdout.join(" and ")} both write to stdout; pick one`,
    );
  }
  return [...new Set(names)] as ReporterName[];
}

/** True when one of `names` writes files into `--output`. */
export function writesFiles(names: readonly ReporterName[]): boolean {
  return names.some((n) => FILE_REPORTERS.includes(n));
}

function count(flag: string, value: string | undefined, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(
      `${flag} must be a ${min === 0 ? "non-negative" : "positive"} integer, got "${value}"`,
    );
  }
  return n;
}

/** Parses `play`'s arguments; throws {@link UsageError}. */
export function parseOptions(argv: string[]): Options | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        qmp: { type: "string" },
        retry: { type: "boolean", default: false },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-hostname": { type: "string" },
        "ssh-config": { type: "string" },
        "ssh-option": { type: "string", multiple: true },
        filter: { type: "string" },
        tag: { type: "string", multiple: true },
        "forbid-only": { type: "boolean", default: false },
        timeout: { type: "string" },
        "step-timeout": { type: "string" },
        retries: { type: "string" },
        "repeat-each": { type: "string" },
        bail: { type: "boolean", default: false },
        parallel: { type: "string" },
        shard: { type: "string" },
        timings: { type: "string" },
        "save-timings": { type: "string" },
        "keep-vm": { type: "boolean", default: false },
        record: { type: "string" },
        reporter: { type: "string", default: "pretty" },
        output: { type: "string" },
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
  const reporters = parseReporters(v.reporter);
  const parallel = count("--parallel", v.parallel, 1, 1);
  const retries = count("--retries", v.retries, 0, 0);
  const repeatEach = count("--repeat-each", v["repeat-each"], 1, 1);
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
  let tags: TagFilter | undefined;
  if (v.tag && v.tag.length > 0) {
    try {
      tags = parseTags(v.tag);
    } catch (e) {
      throw new UsageError(e instanceof Error ? e.message : String(e));
    }
  }
  let shard: ShardSpec | undefined;
  if (v.shard !== undefined) {
    try {
      shard = parseShard(v.shard);
    } catch (e) {
      throw new UsageError(e instanceof Error ? e.message : String(e));
    }
  }
  if (v.timings !== undefined && shard === undefined) {
    throw new UsageError("--timings balances shards: use it with --shard I/N");
  }
  if (v.output !== undefined && !writesFiles(reporters)) {
    throw new UsageError(
      `--output is where file reporters write: add --reporter blob or html (got --reporter ${v.reporter})`,
    );
  }
  const tlsFlags = (["tls-ca", "tls-cert", "tls-key", "tls-hostname"] as const)
    .filter((k) => v[k] !== undefined);
  const isTls = v.qmp !== undefined && /^tls:\/\//i.test(v.qmp.trim());
  if (tlsFlags.length > 0 && !isTls) {
    throw new UsageError(`--${tlsFlags[0]} applies to --qmp tls://HOST:PORT`);
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
    tags,
    tagValues: v.tag ?? [],
    forbidOnly: v["forbid-only"],
    timeout: v.timeout,
    stepTimeout: v["step-timeout"],
    retries,
    repeatEach,
    bail: v.bail,
    parallel,
    shard,
    timings: v.timings,
    saveTimings: v["save-timings"],
    keepVm: v["keep-vm"],
    record: v.record,
    reporters,
    output: v.output ?? "qmpkit-report",
    list: v.list,
    verbose: v.verbose,
    retry: v.retry,
    tls: isTls
      ? {
        caFile: v["tls-ca"],
        certFile: v["tls-cert"],
        keyFile: v["tls-key"],
        hostname: v["tls-hostname"],
      }
      : undefined,
    ssh,
  };
}

/**
 * Checks that `dir` can be created (with `mode` when it is new) and written (a
 * probe file is made and removed); throws {@link UsageError} naming the flag
 * and the reason.
 */
export async function ensureWritableDir(flag: string, dir: string, mode = 0o777): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode });
    const probe = await Deno.makeTempFile({ dir, prefix: ".qmpkit-probe-" });
    await Deno.remove(probe);
  } catch (e) {
    throw new UsageError(
      `${flag} ${dir}: not a writable directory (${e instanceof Error ? e.message : e})`,
    );
  }
}

/** The error (and hint) for a `--filter` that selects nothing among `files` playbook files. */
export function noMatchText(filter: StepFilter, files: number): string {
  return `error: --filter ${filter.source} matches no playbook or step ` +
    `(in ${files} playbook file${files === 1 ? "" : "s"})\n` +
    "hint: --list shows playbook and step names; --filter is a case-sensitive substring " +
    "of a name or step path, or /regex/flags\n";
}
