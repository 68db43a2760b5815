/**
 * Shared bits of the fault suites: settlement tracking (every promise must
 * settle exactly once), an unhandled-rejection guard, timing, and the printed
 * fault table.
 *
 * @module
 */
import assert from "node:assert/strict";

/** One promise under observation. */
export interface Tracked {
  /** What it is (`connect`, `query-status#3`, `waitEvent(STOP)`, ...). */
  label: string;
  /** How many times a settlement callback ran (must end up exactly 1). */
  settlements: number;
  /** `"pending"` until it settles. */
  outcome: "pending" | "resolved" | "rejected";
  /** The resolution value. */
  value?: unknown;
  /** The rejection reason. */
  error?: unknown;
  /** `performance.now()` at settlement. */
  at?: number;
  /** The observed promise (already handled: never an unhandled rejection). */
  promise: Promise<void>;
}

/** Observes `p`: counts its settlements and records the outcome and time. */
export function track(label: string, p: Promise<unknown>): Tracked {
  const t: Tracked = { label, settlements: 0, outcome: "pending", promise: Promise.resolve() };
  t.promise = p.then(
    (value) => {
      t.settlements++;
      t.outcome = "resolved";
      t.value = value;
      t.at = performance.now();
    },
    (error) => {
      t.settlements++;
      t.outcome = "rejected";
      t.error = error;
      t.at = performance.now();
    },
  );
  return t;
}

/** Sleeps `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Awaits `p`, failing with an error naming `what` after `ms`; the timer is always cleared. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits (bounded) until every tracked promise settled, then a little longer,
 * and asserts each settled exactly once. Returns the time of the last settlement.
 */
export async function allSettledOnce(tracked: Tracked[], ms: number): Promise<number> {
  await within(Promise.all(tracked.map((t) => t.promise)), ms, "settlement of every promise");
  await delay(30); // room for a (buggy) second settlement callback
  for (const t of tracked) {
    assert.equal(t.settlements, 1, `${t.label} settled ${t.settlements} times`);
  }
  return Math.max(...tracked.map((t) => t.at!));
}

/** Records unhandled rejections for the whole module; assert with {@link assertNoUnhandled}. */
export const unhandled: unknown[] = [];
let guarded = false;

/** Installs the `unhandledrejection` listener once per process. */
export function guardUnhandled(): void {
  if (guarded) return;
  guarded = true;
  globalThis.addEventListener("unhandledrejection", (e) => {
    unhandled.push(e.reason);
    e.preventDefault(); // fail the test through the assertion, with a readable message
  });
}

/** Lets pending rejections surface, then asserts none was unhandled. */
export async function assertNoUnhandled(): Promise<void> {
  await delay(0);
  await delay(0);
  assert.deepEqual(
    unhandled.map((e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e))),
    [],
    "unhandled rejections",
  );
}

/** `Name: message head` for the table. */
export function errorHead(e: unknown, max = 90): string {
  if (!(e instanceof Error)) return `(resolved) ${JSON.stringify(e)?.slice(0, max)}`;
  const text = `${e.name}: ${e.message.replace(/\s+/g, " ")}`;
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** One row of a printed table. */
export type Row = Record<string, string | number>;

/** Prints rows as an aligned text table (to stdout, captured in the test log). */
export function printTable(title: string, rows: Row[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i]))).join(" | ");
  const out = [
    "",
    title,
    line(cols),
    width.map((w) => "-".repeat(w)).join("-|-"),
    ...rows.map((r) => line(cols.map((c) => String(r[c])))),
    "",
  ];
  console.log(out.join("\n"));
}

/** One row of `ps`. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** `ps` STAT: `Z` for a zombie, `T` for stopped, ... */
  stat: string;
  comm: string;
}

/**
 * A snapshot of the process table from `ps` (Deno allows reading /proc only
 * with --allow-all, which the test task does not grant).
 */
export function processes(): Map<number, ProcessInfo> {
  const out = new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,ppid=,stat=,comm="],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const table = new Map<number, ProcessInfo>();
  for (const l of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(l);
    if (m) table.set(Number(m[1]), { pid: +m[1], ppid: +m[2], stat: m[3], comm: m[4].trim() });
  }
  return table;
}

/** True while a process with this pid exists and is not a zombie. */
export function alive(pid: number): boolean {
  const p = processes().get(pid);
  return p !== undefined && !p.stat.startsWith("Z");
}

/** Waits (bounded) until `pid` is gone. */
export async function gone(pid: number, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await delay(50);
  }
  return !alive(pid);
}

/** All descendants of `pid` (children, grandchildren, ...). */
export function descendants(pid: number): ProcessInfo[] {
  const table = [...processes().values()];
  const out: ProcessInfo[] = [];
  const walk = (p: number) => {
    for (const c of table) {
      if (c.ppid === p) {
        out.push(c);
        walk(c.pid);
      }
    }
  };
  walk(pid);
  return out;
}

/** The command name of `pid`, or `"(gone)"`. */
export function comm(pid: number): string {
  return processes().get(pid)?.comm ?? "(gone)";
}

/** True when `path` exists. */
export async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}
