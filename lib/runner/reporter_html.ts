/**
 * The `html` reporter: one self-contained HTML file (`DIR/index.html`) for
 * people to look at. Playbooks and their steps with status and duration, a
 * timeline of each playbook's (each VM's) steps, and for every failure the
 * expected/actual diff, the step path, the last QMP messages as a table
 * (sent/received, time, the JSON of each message behind a click), the serial
 * console tail and how QEMU died.
 *
 * The file makes no network fetch: CSS and a small script are inline, there
 * are no images or fonts. Without JavaScript everything still works (it is
 * built on `<details>` and CSS); the script only opens the failure a link
 * points at and adds expand/collapse buttons.
 *
 * Driven by {@link RunSummary} alone, so it renders a direct run and merged
 * shards (`merge-reports`) alike. Every value is HTML-escaped; transcripts and
 * everything else go through `lib/redact.ts` first. Long texts are cut
 * (transcripts, console tails, logs, stacks), so the file stays small.
 *
 * @module
 */
import { join } from "node:path";
import { formatDuration } from "../duration.ts";
import { stringifyJson } from "../json.ts";
import { redactDeep, redactMessage } from "../redact.ts";
import { ReportOutputError } from "./errors.ts";
import {
  countResults,
  type Failure,
  jsonSafeResults,
  type LogEntry,
  type PlaybookResult,
  type RunSummary,
  type StepResult,
  type TranscriptRecord,
} from "./results.ts";

/** The file the `html` reporter writes into its output directory. */
export const HTML_REPORT_FILE = "index.html";

/** Limits that keep the report small (the newest part of each is kept). */
const LIMITS = {
  /** QMP messages shown per failure. */
  transcript: 30,
  /** Characters of one message's pretty-printed JSON. */
  messageJson: 4000,
  /** Characters of a message's one-line summary. */
  messageLine: 110,
  /** Lines and characters of a console tail. */
  consoleLines: 40,
  consoleChars: 6000,
  /** Log entries per playbook, and characters per entry. */
  logs: 150,
  logChars: 600,
  /** Characters of a diff, an expected/actual value or a message. */
  text: 12000,
  /** Stack trace lines. */
  stackLines: 12,
} as const;

// ------------------------------------------------------------------------------ safe HTML

/** HTML that is already escaped; anything else interpolated into {@link h} is escaped. */
class Html {
  constructor(readonly text: string) {}
}

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML content and quoted attributes; drops control characters. */
function esc(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "")
    .replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

function part(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (value === undefined || value === null || value === false) return "";
  if (Array.isArray(value)) return value.map(part).join("");
  return esc(String(value));
}

/** A template tag: interpolated values are escaped unless they are {@link Html}. */
function h(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Keeps the end of `text` (at most `max` characters), saying how much was cut. */
function tailText(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(text.length - max);
  const nl = cut.indexOf("\n");
  const kept = nl >= 0 && nl < 200 ? cut.slice(nl + 1) : cut;
  return `… (${text.length - kept.length} earlier characters not shown)\n${kept}`;
}

/** Keeps the start of `text` (at most `max` characters), saying how much was cut. */
function headText(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}\n… (${text.length - max} more characters not shown)`;
}

function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\x1b[()][A-Z0-9]/g, "");
}

// ------------------------------------------------------------------------------- statuses

const STATUSES = ["passed", "failed", "skipped", "flaky", "interrupted"] as const;
type Status = (typeof STATUSES)[number];

/** A known status (class names come from this list only), `failed` for anything else. */
function status(s: string): Status {
  return (STATUSES as readonly string[]).includes(s) ? s as Status : "failed";
}

const ICON: Record<Status, string> = {
  passed: "✓",
  failed: "✗",
  skipped: "–",
  flaky: "↻",
  interrupted: "■",
};

function badge(s: string): Html {
  const st = status(s);
  return h`<span class="badge ${st}">${ICON[st]} ${s}</span>`;
}

function dur(ms: number): Html {
  return h`<span class="dur">${formatDuration(ms)}</span>`;
}

// -------------------------------------------------------------------------------- failures

/** The one-line summary of a QMP message for the transcript table. */
function messageLine(message: Record<string, unknown>): string {
  const one = (v: unknown) => {
    const t = JSON.stringify(v) ?? "undefined";
    return t.length > LIMITS.messageLine ? t.slice(0, LIMITS.messageLine - 1) + "…" : t;
  };
  const m = message;
  if (typeof m.execute === "string" || typeof m["exec-oob"] === "string") {
    const cmd = (m.execute ?? m["exec-oob"]) as string;
    return m.arguments === undefined ? cmd : `${cmd} ${one(m.arguments)}`;
  }
  if (typeof m.event === "string") {
    return m.data === undefined ? `event ${m.event}` : `event ${m.event} ${one(m.data)}`;
  }
  if ("QMP" in m) return "greeting";
  if (typeof m.error === "object" && m.error !== null) {
    const e = m.error as Record<string, unknown>;
    return `error ${e.class ?? ""}: ${e.desc ?? ""}`;
  }
  if ("return" in m) return `return ${one(m.return)}`;
  return one(m);
}

function clock(iso: string): string {
  return /T(\d\d:\d\d:\d\d(?:\.\d+)?)/.exec(iso)?.[1] ?? iso;
}

function transcriptTable(records: readonly TranscriptRecord[]): Html {
  const shown = records.slice(-LIMITS.transcript);
  const first = Date.parse(shown[0]?.time ?? "");
  const rows = shown.map((rec) => {
    const send = rec.direction === "send";
    const message = redactMessage(rec.message);
    const rel = Date.parse(rec.time) - first;
    const time = h`<td class="t" title="${rec.time}">${clock(rec.time)}${
      Number.isFinite(rel) && rel > 0 ? h`<small> +${formatDuration(rel)}</small>` : ""
    }</td>`;
    const json = headText(stringifyJson(message, 2), LIMITS.messageJson);
    return h`<tr class="${send ? "send" : "recv"}">${time}<td>${rec.vm}</td><td class="dir">${
      send ? "→ sent" : "← received"
    }</td><td class="msg"><details><summary><code>${
      messageLine(message)
    }</code></summary><pre>${json}</pre></details></td></tr>`;
  });
  const more = records.length - shown.length;
  return h`<h4>Last QMP messages <small>(${shown.length}${
    more > 0 ? `, ${more} earlier not shown` : ""
  }; click one for its JSON)</small></h4><table class="qmp"><thead><tr><th>time</th><th>VM</th><th></th><th>message</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function diffBlock(f: Failure): Html {
  if (f.diff) {
    let diffLines = headText(f.diff, LIMITS.text).split("\n");
    if (diffLines[0] === "- Expected" && diffLines[1] === "+ Received") {
      diffLines = diffLines.slice(diffLines[2] === "" ? 3 : 2);
    }
    const lines = diffLines.map((l) => {
      const cls = l === "- Expected" || l === "+ Received"
        ? "hd"
        : l.startsWith("- ")
        ? "del"
        : l.startsWith("+ ")
        ? "add"
        : l.startsWith("  ") || l === ""
        ? ""
        : "note";
      return cls ? h`<span class="${cls}">${l}</span>\n` : h`${l}\n`;
    });
    return h`<h4>Expected <span class="del">−</span> / received <span class="add">+</span>${
      f.matcher ? h` <small>(${f.matcher})</small>` : ""
    }</h4><pre class="diff">${lines}</pre>`;
  }
  if (f.expected === undefined && f.actual === undefined) return h``;
  return h`<h4>Expected / received${
    f.matcher ? h` <small>(${f.matcher})</small>` : ""
  }</h4><div class="ea">${
    f.expected !== undefined
      ? h`<div><b>expected</b><pre class="diff"><span class="del">${
        headText(f.expected, LIMITS.text)
      }</span></pre></div>`
      : ""
  }${
    f.actual !== undefined
      ? h`<div><b>received</b><pre class="diff"><span class="add">${
        headText(f.actual, LIMITS.text)
      }</span></pre></div>`
      : ""
  }</div>`;
}

function consoleBlock(text: string): Html {
  const lines = stripAnsi(text).replace(/\r/g, "").replace(/\n+$/, "").split("\n");
  const shown = lines.slice(-LIMITS.consoleLines);
  const cut = lines.length - shown.length;
  return h`<h4>Serial console <small>(${
    shown.length === 1 ? "last line" : `last ${shown.length} lines`
  }${cut > 0 ? `; ${cut} earlier not shown` : ""})</small></h4><pre class="console">${
    tailText(shown.join("\n"), LIMITS.consoleChars)
  }</pre>`;
}

function stackBlock(stack: string | undefined): Html {
  const frames = (stack ?? "").split("\n").filter((l) => /^\s+at /.test(l)).map((l) => l.trim());
  if (frames.length === 0) return h``;
  const shown = frames.slice(0, LIMITS.stackLines);
  return h`<details class="stack"><summary>stack trace (${frames.length} frames)</summary><pre>${
    shown.join("\n")
  }${
    frames.length > shown.length ? `\n… ${frames.length - shown.length} more` : ""
  }</pre></details>`;
}

/** The details of one failure (shown when its row is opened). */
function failureBody(f: Failure): Html {
  const [first, ...rest] = headText(f.message, LIMITS.text).split("\n");
  return h`<div class="failure"><p class="err"><b>${f.name}</b>: ${first}</p>${
    rest.length ? h`<pre class="more">${rest.join("\n")}</pre>` : ""
  }<p class="path">at <code>${f.step}</code></p>${diffBlock(f)}${
    f.causes.length
      ? h`<ul class="causes">${
        f.causes.map((c) => h`<li>caused by: ${headText(c, LIMITS.text)}</li>`)
      }</ul>`
      : ""
  }${
    f.qemuExit
      ? h`<div class="qemu"><h4>How QEMU died</h4><pre>QEMU ${
        headText(f.qemuExit, LIMITS.text)
      }</pre></div>`
      : ""
  }${f.transcript.length ? transcriptTable(f.transcript) : ""}${
    f.consoleTail ? consoleBlock(f.consoleTail) : ""
  }${stackBlock(f.stack)}</div>`;
}

// ---------------------------------------------------------------------------------- steps

/** Gives every failure a stable anchor (`f1`, `f2`...) in document order. */
class Anchors {
  #n = 0;
  next(): string {
    return `f${++this.#n}`;
  }
}

function stepItem(s: StepResult, ids: Map<unknown, string>): Html {
  const st = status(s.status);
  const head = h`<span class="ic ${st}">${ICON[st]}</span> <span class="sn">${s.name}</span>${
    s.status === "skipped" && s.skipReason ? h` <span class="why">${s.skipReason}</span>` : ""
  }${s.nestedFailure ? h` <span class="why">a nested step failed</span>` : ""}${
    s.status !== "skipped" ? dur(s.durationMs) : ""
  }`;
  const children = s.steps.length
    ? h`<ol class="steps">${s.steps.map((c) => stepItem(c, ids))}</ol>`
    : "";
  if (s.failure) {
    return h`<li class="step ${st}"><details class="fail" id="${
      ids.get(s.failure)
    }"><summary>${head}${failureSummary(s.failure)}</summary>${
      failureBody(s.failure)
    }</details>${children}</li>`;
  }
  return h`<li class="step ${st}"><div class="row">${head}</div>${children}</li>`;
}

function failureSummary(f: Failure): Html {
  const first = f.message.split("\n")[0];
  return h`<span class="em">${f.name}: ${
    first.length > 160 ? first.slice(0, 159) + "…" : first
  }</span>`;
}

/** A failure outside the step tree (`(playbook)`, `(load)`, `cleanup`) as a row. */
function looseFailure(label: string, f: Failure, ids: Map<unknown, string>): Html {
  return h`<li class="step failed"><details class="fail" id="${
    ids.get(f)
  }"><summary><span class="ic failed">✗</span> <span class="sn">${label}</span>${
    failureSummary(f)
  }</summary>${failureBody(f)}</details></li>`;
}

function logBlock(logs: readonly LogEntry[]): Html {
  if (logs.length === 0) return h``;
  const shown = logs.slice(-LIMITS.logs);
  const cut = logs.length - shown.length;
  return h`<details class="logs"><summary>log (${logs.length} line${logs.length === 1 ? "" : "s"}${
    cut ? `, last ${shown.length} shown` : ""
  })</summary><pre>${
    shown.map((e) =>
      h`<span class="t">${clock(e.time)}</span> <span class="src">${e.source}</span>${
        e.path.length ? h` <span class="why">${e.path.join(" › ")}</span>` : ""
      } ${headText(stripAnsi(e.message), LIMITS.logChars)}\n`
    )
  }</pre></details>`;
}

function stepCounts(r: PlaybookResult): string {
  const c = countResults([r]).steps;
  const parts = [`${c.passed} passed`];
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.skipped) parts.push(`${c.skipped} skipped`);
  return `steps: ${parts.join(", ")}`;
}

/** The body of one attempt: its steps, playbook and cleanup failures. */
function attemptBody(r: PlaybookResult, ids: Map<unknown, string>): Html {
  const items = [
    ...r.steps.map((s) => stepItem(s, ids)),
    ...(r.failure ? [looseFailure(r.failure.step, r.failure, ids)] : []),
    ...r.cleanupFailures.map((f) => looseFailure("cleanup", f, ids)),
  ];
  return items.length ? h`<ol class="steps top">${items}</ol>` : h``;
}

function playbookBlock(r: PlaybookResult, index: number, ids: Map<unknown, string>): Html {
  const st = status(r.status);
  const open = st === "failed" || st === "flaky" || st === "interrupted";
  const attempts = r.attempts ?? [];
  const extra: string[] = [];
  if (r.retry) extra.push(`retry ${r.retry}`);
  if (r.repeat !== undefined && r.repeat > 0) extra.push(`repeat ${r.repeat + 1}`);
  return h`<details class="pb ${st}" id="pb${index + 1}"${open ? new Html(" open") : ""}><summary>${
    badge(r.status)
  } <b class="name">${r.name}</b>${
    r.file && r.file !== r.name ? h` <span class="file">${r.file}</span>` : ""
  }${(r.tags ?? []).map((t) => h` <span class="tag">${t}</span>`)}${
    extra.length ? h` <span class="why">${extra.join(", ")}</span>` : ""
  }<span class="right">${
    r.status === "skipped" && r.durationMs === 0
      ? r.skipReason ?? ""
      : h`${stepCounts(r)} ${dur(r.durationMs)}`
  }</span></summary><div class="pbody">${
    r.skipReason ? h`<p class="why">skipped: ${r.skipReason}</p>` : ""
  }${
    r.steps.length === 0 && !r.failure && !r.skipReason
      ? h`<p class="why">no step ran${
        r.status === "interrupted" ? " before the run was interrupted" : ""
      }</p>`
      : ""
  }${attemptBody(r, ids)}${
    attempts.map((a, i) =>
      h`<details class="attempt"><summary>${badge(a.status)} earlier attempt ${
        (a.retry ?? i) + 1
      } of ${attempts.length + 1} ${dur(a.durationMs)}</summary>${attemptBody(a, ids)}${
        logBlock(a.logs)
      }</details>`
    )
  }${
    r.kept.length
      ? h`<p class="why">left running (--keep-vm): ${
        r.kept.map((k) => `${k.label} pid ${k.pid} unix:${k.socketPath}`).join("; ")
      }</p>`
      : ""
  }${r.recording ? h`<p class="why">QMP recording: <code>${r.recording}</code></p>` : ""}${
    logBlock(r.logs)
  }</div></details>`;
}

// ------------------------------------------------------------------------------- timeline

/** A bar of the timeline: one VM's life (an attempt) or one step. */
interface Bar {
  title: string;
  status: Status;
  start: number;
  ms: number;
  /** -1 for an attempt's VM span, else the step's nesting depth. */
  depth: number;
  /** An earlier (failed) attempt of a retried playbook: drawn dimmed. */
  prior: boolean;
  /** The failure anchor a failed step links to. */
  id?: string;
}

/** One timeline lane: a playbook, with every attempt's VM and steps. */
interface Lane {
  label: string;
  title: string;
  status: Status;
  bars: Bar[];
  href: string;
}

function timeline(
  results: readonly PlaybookResult[],
  ids: Map<unknown, string>,
): Html {
  const lanes: Lane[] = [];
  // Playbooks without a start time are laid out one after another per worker.
  const cursor = new Map<number, number>();
  const starts = results.flatMap((r) => [r, ...(r.attempts ?? [])])
    .map((r) => Date.parse(r.startedAt ?? "")).filter(Number.isFinite);
  const t0 = starts.length ? Math.min(...starts) : 0;
  const attemptBars = (r: PlaybookResult, prior: boolean, label: string): Bar[] => {
    if (r.status === "skipped" && r.durationMs === 0) return [];
    const w = r.worker ?? 0;
    const abs = Date.parse(r.startedAt ?? "");
    const start = Number.isFinite(abs) ? abs - t0 : cursor.get(w) ?? 0;
    cursor.set(w, start + r.durationMs);
    const bars: Bar[] = [{
      title: `${label}: ${formatDuration(r.durationMs)} (VM launch to shutdown)`,
      status: status(r.status),
      start,
      ms: r.durationMs,
      depth: -1,
      prior,
    }];
    const walk = (list: readonly StepResult[], from: number, depth: number) => {
      let at = from;
      for (const s of list) {
        const sStart = s.startMs !== undefined ? start + s.startMs : at;
        at = sStart + s.durationMs;
        if (s.status !== "skipped") {
          bars.push({
            title: `${prior ? `${label}: ` : ""}${s.path.join(" › ")} · ${s.status} · ${
              formatDuration(s.durationMs)
            }`,
            status: status(s.status),
            start: sStart,
            ms: s.durationMs,
            depth,
            prior,
            id: s.failure ? ids.get(s.failure) : undefined,
          });
        }
        walk(s.steps, sStart, depth + 1);
      }
    };
    walk(r.steps, start, 0);
    return bars;
  };
  results.forEach((r, i) => {
    const attempts = r.attempts ?? [];
    const bars = [
      ...attempts.flatMap((a, j) =>
        attemptBars(a, true, `attempt ${(a.retry ?? j) + 1} of ${attempts.length + 1}`)
      ),
      ...attemptBars(r, false, attempts.length ? `attempt ${attempts.length + 1}` : r.name),
    ];
    if (bars.length === 0) return;
    lanes.push({
      label: r.repeat ? `${r.name} #${r.repeat + 1}` : r.name,
      title: `${r.name}${r.file ? ` (${r.file})` : ""}${
        attempts.length ? `: ${attempts.length + 1} attempts` : ""
      }`,
      status: status(r.status),
      bars,
      href: `#pb${i + 1}`,
    });
  });
  if (lanes.length === 0) return h``;
  const span = Math.max(1, ...lanes.flatMap((l) => l.bars.map((b) => b.start + b.ms)));
  const pct = (ms: number) => (Math.max(0, ms) / span * 100).toFixed(2);
  const step = niceStep(span / 5);
  const ticks: Html[] = [];
  for (let ms = 0; ms <= span + 1e-9; ms += step) {
    const edge = ms === 0 ? "first" : ms / span > 0.94 ? "last" : "";
    ticks.push(
      h`<span${edge ? h` class="${edge}"` : ""} style="left:${pct(ms)}%">${tickLabel(ms)}</span>`,
    );
  }
  const bar = (b: Bar) => {
    const pos = `left:${pct(b.start)}%;width:${pct(b.ms)}%`;
    if (b.depth < 0) {
      return h`<i class="vm${b.prior ? " prior" : ""}" style="${pos}" title="${b.title}"></i>`;
    }
    const style = `${pos};top:${3 + b.depth * 5}px;height:${Math.max(4, 16 - b.depth * 5)}px`;
    const cls = `s ${b.status}${b.prior ? " prior" : ""}`;
    return b.id
      ? h`<a class="${cls}" href="#${b.id}" style="${style}" title="${b.title}"></a>`
      : h`<i class="${cls}" style="${style}" title="${b.title}"></i>`;
  };
  const rows = lanes.map((l) =>
    h`<div class="lane"><a class="lbl" href="${l.href}" title="${l.title}"><span class="ic ${l.status}">${
      ICON[l.status]
    }</span> ${l.label}</a><div class="track">${l.bars.map(bar)}</div></div>`
  );
  return h`<section id="timeline"><h2>Timeline <small>(one lane per playbook and its VM; steps by start time; hover for names, click a red bar for its failure)</small></h2><div class="axis"><span class="lblsp"></span><div class="ticks">${ticks}</div></div>${rows}</section>`;
}

/** A round axis step (1, 2 or 5 × 10^n ms) near `rough`. */
function niceStep(rough: number): number {
  const pow = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  const n = rough / pow;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * pow;
}

/** An axis label: `0s`, `250ms`, `1.5s`, `20s`, `2m30s`. */
function tickLabel(ms: number): string {
  if (ms === 0) return "0s";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(2))}s`;
  const m = Math.floor(ms / 60_000);
  const sec = Math.round((ms % 60_000) / 1000);
  return sec ? `${m}m${String(sec).padStart(2, "0")}s` : `${m}m`;
}

// ---------------------------------------------------------------------------------- page

const CSS = `
:root{--fg:#1f2328;--mut:#656d76;--bg:#fff;--bg2:#f6f8fa;--bd:#d0d7de;--passed:#1a7f37;--failed:#cf222e;--skipped:#8c959f;--flaky:#bf8700;--interrupted:#8250df;--add:#dafbe1;--del:#ffebe9;--mono:ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--mut:#9198a1;--bg:#0d1117;--bg2:#161b22;--bd:#30363d;--add:#12361f;--del:#4a1519}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1200px;padding:16px 24px 40px;font:14px/1.45 system-ui,"DejaVu Sans","Liberation Sans",sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:20px;margin:0 12px 0 0;display:inline}h2{font-size:16px;margin:24px 0 8px}h4{font-size:13px;margin:14px 0 6px}
small,.why,.file,.dur,.meta{color:var(--mut)}small{font-weight:normal}
code,pre{font-family:var(--mono);font-size:12.5px}
pre{margin:0;padding:8px 10px;background:var(--bg2);border:1px solid var(--bd);border-radius:6px;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
a{color:inherit}
header{border-bottom:1px solid var(--bd);padding-bottom:12px}
.meta{margin:6px 0}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0 0;padding:0;list-style:none}
.counts li{padding:2px 10px;border-radius:12px;background:var(--bg2);border:1px solid var(--bd)}
.badge{display:inline-block;padding:0 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;line-height:20px;white-space:nowrap}
.badge.passed{background:var(--passed)}.badge.failed{background:var(--failed)}.badge.skipped{background:var(--skipped)}.badge.flaky{background:var(--flaky)}.badge.interrupted{background:var(--interrupted)}
.ic{font-weight:bold;display:inline-block;width:1em;text-align:center}
.ic.passed{color:var(--passed)}.ic.failed{color:var(--failed)}.ic.skipped{color:var(--skipped)}.ic.flaky{color:var(--flaky)}.ic.interrupted{color:var(--interrupted)}
.filter{margin:12px 0 0;display:flex;gap:14px;flex-wrap:wrap;align-items:center}.filter label{cursor:pointer}
body:has(#f-failed:checked) .pb:not(.failed):not(.interrupted),body:has(#f-flaky:checked) .pb:not(.flaky),body:has(#f-passed:checked) .pb:not(.passed),body:has(#f-skipped:checked) .pb:not(.skipped){display:none}
summary{cursor:pointer}
.pb{border:1px solid var(--bd);border-radius:8px;margin:8px 0;background:var(--bg)}
.pb>summary{padding:8px 12px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.pb[open]>summary{border-bottom:1px solid var(--bd);background:var(--bg2);border-radius:8px 8px 0 0}
.pb.failed{border-left:4px solid var(--failed)}.pb.flaky{border-left:4px solid var(--flaky)}.pb.interrupted{border-left:4px solid var(--interrupted)}
.right{margin-left:auto;color:var(--mut);font-size:13px}
.tag{font-size:12px;padding:0 6px;border-radius:4px;background:var(--bg2);border:1px solid var(--bd)}
.pbody{padding:6px 12px 10px}
ol.steps{list-style:none;margin:0;padding-left:20px}ol.steps.top{padding-left:0}
.step>.row,.step>details>summary{padding:2px 0}
.dur{margin-left:8px;font-size:12.5px}
.em{display:block;color:var(--failed);margin-left:30px;font-family:var(--mono);font-size:12.5px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.fail[open]>summary .em{display:none}
.fail>summary{list-style:none}.fail>summary::-webkit-details-marker{display:none}
.fail>summary::before{content:"▸";display:inline-block;width:14px;color:var(--mut)}.fail[open]>summary::before{content:"▾"}
.step>.row{padding-left:14px}
.fail[open]>summary{font-weight:600}
.failure{margin:6px 0 10px 4px;padding:10px 12px;border:1px solid var(--bd);border-left:3px solid var(--failed);border-radius:6px;background:var(--bg)}
.failure .err{margin:0;font-family:var(--mono);font-size:13px;white-space:pre-wrap;overflow-wrap:anywhere}.failure .err b{color:var(--failed)}
.path{margin:6px 0}
.diff .add{background:var(--add);display:inline-block;min-width:100%}.diff .del{background:var(--del);display:inline-block;min-width:100%}.diff .hd{color:var(--mut)}.diff .note{color:var(--mut);font-style:italic}
h4 .add{background:var(--add);padding:0 4px}h4 .del{background:var(--del);padding:0 4px}
.ea{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.causes{margin:8px 0;padding-left:18px;color:var(--mut)}
.qemu pre{border-color:var(--failed)}
table.qmp{border-collapse:collapse;width:100%;font-size:12.5px}
.qmp th,.qmp td{text-align:left;vertical-align:top;padding:3px 8px;border-bottom:1px solid var(--bd)}
.qmp th{background:var(--bg2)}.qmp td.t{white-space:nowrap;font-family:var(--mono)}.qmp td.dir{white-space:nowrap}
.qmp tr.send td.dir{color:#0969da}.qmp tr.recv td.dir{color:var(--passed)}
.qmp td.msg{width:100%}.qmp td.msg code{overflow-wrap:anywhere}.qmp td.msg pre{margin-top:4px}
pre.console{background:#161b22;color:#e6edf3;border-color:#30363d;max-height:420px}
.stack,.logs,.attempt{margin:8px 0}.stack>summary,.logs>summary{color:var(--mut)}
.logs pre{max-height:320px}.logs .t{color:var(--mut)}.logs .src{color:#0969da}
.attempt{border:1px dashed var(--bd);border-radius:6px;padding:4px 8px}
#timeline .lane,#timeline .axis{display:flex;align-items:center;height:24px}
#timeline .lbl,#timeline .lblsp{flex:0 0 240px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding-right:8px;font-size:13px;text-decoration:none}
#timeline .track,#timeline .ticks{position:relative;flex:1;height:22px}
#timeline .track{background:var(--bg2);border-radius:3px}
#timeline .ticks span{position:absolute;top:3px;font-size:11px;color:var(--mut);transform:translateX(-50%)}#timeline .ticks span.first{transform:none}#timeline .ticks span.last{transform:translateX(-100%)}
#timeline .vm{position:absolute;top:1px;bottom:1px;background:var(--bd);border-radius:3px;min-width:2px}
#timeline .s{position:absolute;border-radius:2px;min-width:2px;opacity:.9;border:1px solid var(--bg)}#timeline .prior{opacity:.45}
.s.passed{background:var(--passed)}.s.failed{background:var(--failed)}.s.flaky{background:var(--flaky)}.s.interrupted{background:var(--interrupted)}
.tools{float:right}.tools button{font:inherit;font-size:12px;margin-left:6px;padding:2px 8px;border:1px solid var(--bd);border-radius:6px;background:var(--bg2);color:var(--fg);cursor:pointer}
footer{margin-top:24px;color:var(--mut);font-size:12px}
`.trim().replace(/\n/g, "");

const SCRIPT = `
(function(){
function openTo(id){var e=document.getElementById(id);if(!e)return;for(var p=e;p;p=p.parentElement)if(p.tagName==="DETAILS")p.open=true;e.scrollIntoView({block:"start"});}
function onHash(){if(location.hash.length>1)openTo(decodeURIComponent(location.hash.slice(1)));}
addEventListener("hashchange",onHash);onHash();
var t=document.getElementById("tools");if(!t)return;t.hidden=false;
function all(open,sel){document.querySelectorAll(sel).forEach(function(d){d.open=open;});}
t.addEventListener("click",function(ev){var a=ev.target.getAttribute("data-a");
if(a==="failures"){all(true,".pb.failed,.pb.flaky,.pb.interrupted,details.fail");}
else if(a==="expand"){all(true,"details.pb,details.fail,details.attempt");}
else if(a==="collapse"){all(false,"details");}});
})();
`.trim();

function countsList(s: RunSummary): Html {
  const p = s.counts.playbooks;
  const items = (["failed", "flaky", "interrupted", "passed", "skipped"] as const)
    .filter((k) => p[k] > 0 || k === "passed" || k === "failed")
    .map((k) => h`<li><span class="ic ${k}">${ICON[k]}</span> ${p[k]} ${k}</li>`);
  const st = s.counts.steps;
  items.push(
    h`<li class="why">steps: ${st.passed} passed, ${st.failed} failed, ${st.skipped} skipped</li>`,
  );
  return h`<ul class="counts">${items}</ul>`;
}

function metaLine(s: RunSummary): string {
  const parts: string[] = [];
  if (s.startedAt) parts.push(`started ${s.startedAt.replace("T", " ").replace(/\.\d+Z$/, "Z")}`);
  parts.push(`took ${formatDuration(s.durationMs)}`);
  if (s.shard) parts.push(`shard ${s.shard.index}/${s.shard.total}`);
  if (s.shards?.length) parts.push(`merged from ${s.shards.length} shards`);
  if (s.config) {
    if (s.config.parallel > 1) parts.push(`--parallel ${s.config.parallel}`);
    if (s.config.retries > 0) parts.push(`--retries ${s.config.retries}`);
    if (s.config.repeatEach > 1) parts.push(`--repeat-each ${s.config.repeatEach}`);
    if (s.config.tags.length) parts.push(`--tag ${s.config.tags.join(" --tag ")}`);
  }
  if (s.runnerVersion) parts.push(`qmpkit ${s.runnerVersion}`);
  return parts.join(" · ");
}

/**
 * The HTML report of a run (or of merged shards) as one self-contained
 * document. Values are escaped and transcripts redacted; long texts are cut
 * to keep it small.
 */
export function htmlReport(summary: RunSummary): string {
  // JSON-safe (no Machine objects) and redacted, the whole tree.
  const results = redactDeep(jsonSafeResults(summary.results));
  const s: RunSummary = { ...summary, results, counts: countResults(results) };
  const ids = new Map<unknown, string>();
  const anchors = new Anchors();
  const note = (f: Failure) => ids.set(f, anchors.next());
  const walk = (steps: readonly StepResult[]) => {
    for (const st of steps) {
      if (st.failure) note(st.failure);
      walk(st.steps);
    }
  };
  const noteAll = (r: PlaybookResult) => {
    walk(r.steps);
    if (r.failure) note(r.failure);
    r.cleanupFailures.forEach(note);
  };
  for (const r of results) {
    noteAll(r);
    (r.attempts ?? []).forEach(noteAll);
  }

  const ok = summary.ok;
  const p = s.counts.playbooks;
  const onlyInterrupted = !ok && summary.interrupted && p.failed === 0;
  const verdict = ok ? "passed" : onlyInterrupted ? "interrupted" : "FAILED";
  const title = `${verdict}: ${p.failed} failed, ${p.passed} passed` +
    (p.flaky ? `, ${p.flaky} flaky` : "") +
    (p.interrupted ? `, ${p.interrupted} interrupted` : "") +
    (p.skipped ? `, ${p.skipped} skipped` : "");
  const interrupted = summary.interrupted
    ? h` <span class="badge interrupted">■ interrupted by ${
      summary.interruptedBy ?? "Ctrl-C"
    }</span>`
    : "";
  const filters = (["all", "failed", "flaky", "passed", "skipped"] as const).map((k) =>
    h`<label><input type="radio" name="f" id="f-${k}"${k === "all" ? new Html(" checked") : ""}> ${
      k === "all"
        ? `all (${results.length})`
        : `${k} (${k === "failed" ? p.failed + p.interrupted : p[k]})`
    }</label>`
  );
  const body = h`<header><h1>qmpkit playbook report</h1>${
    onlyInterrupted ? "" : badge(ok ? "passed" : "failed")
  }${interrupted}<p class="meta">${metaLine(s)}</p>${countsList(s)}</header>${
    timeline(results, ids)
  }<section id="playbooks"><h2>Playbooks <span class="tools" id="tools" hidden><button type="button" data-a="failures">open failures</button><button type="button" data-a="expand">expand all</button><button type="button" data-a="collapse">collapse all</button></span></h2><div class="filter"><span class="why">show:</span>${filters}</div>${
    results.map((r, i) => playbookBlock(r, i, ids))
  }</section><footer>Generated by qmpkit at ${
    new Date().toISOString()
  }. Secrets in QMP messages are redacted; long transcripts, console output and logs are cut to their last part.</footer>`;
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${esc(`qmpkit report — ${title}`)}</title><style>${CSS}</style></head>` +
    `<body>${body.text}<script>${SCRIPT}</script></body></html>\n`;
}

function outputError(dir: string, e: unknown): ReportOutputError {
  const why = e instanceof Deno.errors.NotADirectory ||
      (e instanceof Error && /Not a directory|os error 20\b/.test(e.message))
    ? "a path component is a file, not a directory"
    : e instanceof Deno.errors.AlreadyExists
    ? "it exists and is not a directory"
    : e instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : e instanceof Error
    ? e.message
    : String(e);
  return new ReportOutputError(
    dir,
    `Cannot write the report into ${dir}: ${why}. Pass a writable directory with --output DIR`,
    { cause: e },
  );
}

/**
 * Writes the HTML report of `summary` to `dir/index.html` (creating `dir`)
 * and returns the file's path. Throws {@link ReportOutputError} when it
 * cannot be written.
 */
export async function writeHtmlReport(dir: string, summary: RunSummary): Promise<string> {
  const html = htmlReport(summary);
  const path = join(dir, HTML_REPORT_FILE);
  try {
    await Deno.mkdir(dir, { recursive: true });
    const tmp = join(dir, `.${HTML_REPORT_FILE}.${Deno.pid}.tmp`);
    try {
      await Deno.writeTextFile(tmp, html);
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  } catch (e) {
    throw outputError(dir, e);
  }
  return path;
}
