/**
 * The `tap` reporter: TAP version 14 on stdout, a subtest per playbook.
 *
 * @module
 */
import { redactDeep } from "../redact.ts";
import { formatTranscriptLine } from "./report_text.ts";
import type { Failure, RunSummary, StepResult } from "./results.ts";

function tapName(name: string): string {
  return name.replace(/\\/g, "\\\\").replace(/#/g, "\\#").replace(/\n/g, " ");
}

function yamlBlock(f: Failure, durationMs: number | undefined, indent: string): string[] {
  const lines = [`${indent}  ---`];
  const str = (k: string, v: string) => {
    if (v.includes("\n")) {
      lines.push(`${indent}  ${k}: |-`, ...v.split("\n").map((l) => `${indent}    ${l}`));
    } else lines.push(`${indent}  ${k}: ${JSON.stringify(v)}`);
  };
  str("message", f.message);
  str("name", f.name);
  str("step", f.step);
  if (durationMs !== undefined) lines.push(`${indent}  duration_ms: ${Math.round(durationMs)}`);
  if (f.expected !== undefined) str("expected", f.expected);
  if (f.actual !== undefined) str("actual", f.actual);
  if (f.diff) str("diff", f.diff);
  if (f.transcript.length) str("qmp", f.transcript.map((r) => formatTranscriptLine(r)).join("\n"));
  lines.push(`${indent}  ...`);
  return lines;
}

/**
 * The TAP version 14 document printed by the `tap` reporter: a subtest per
 * playbook. A flaky playbook is `ok`, followed by a `# flaky: ...` comment.
 */
export function tapReport(s: RunSummary): string {
  s = redactDeep(s);
  const out = ["TAP version 14"];
  const steps = (list: StepResult[], indent: string) => {
    list.forEach((st, i) => {
      if (st.steps.length > 0) {
        out.push(`${indent}# Subtest: ${tapName(st.name)}`);
        steps(st.steps, indent + "    ");
        out.push(`${indent}    1..${st.steps.length}`);
      }
      const n = i + 1;
      if (st.status === "skipped") {
        out.push(`${indent}ok ${n} - ${tapName(st.name)} # SKIP ${tapName(st.skipReason ?? "")}`);
      } else if (st.status === "passed") out.push(`${indent}ok ${n} - ${tapName(st.name)}`);
      else {
        out.push(`${indent}not ok ${n} - ${tapName(st.name)}`);
        if (st.failure) out.push(...yamlBlock(st.failure, st.durationMs, indent));
      }
    });
  };
  s.results.forEach((r, i) => {
    const label = r.repeat !== undefined ? `${r.name} (repeat ${r.repeat + 1})` : r.name;
    const indent = "    ";
    out.push(`# Subtest: ${tapName(label)}`);
    steps(r.steps, indent);
    let count = r.steps.length;
    if (r.failure) {
      count++;
      out.push(`${indent}not ok ${count} - (playbook)`, ...yamlBlock(r.failure, undefined, indent));
    }
    for (const f of r.cleanupFailures) {
      count++;
      out.push(`${indent}not ok ${count} - cleanup`, ...yamlBlock(f, undefined, indent));
    }
    out.push(`${indent}1..${count}`);
    const n = i + 1;
    if (r.status === "skipped") {
      out.push(`ok ${n} - ${tapName(label)} # SKIP ${tapName(r.skipReason ?? "")}`);
    } else if (r.status === "passed") out.push(`ok ${n} - ${tapName(label)}`);
    else if (r.status === "flaky") {
      out.push(`ok ${n} - ${tapName(label)}`);
      out.push(
        `# flaky: ${tapName(r.name)} failed ${r.attempts?.length ?? 0} time(s), ` +
          `then passed on retry ${r.retry ?? 0}`,
      );
    } else {out.push(
        `not ok ${n} - ${tapName(label)}${r.status === "interrupted" ? " # interrupted" : ""}`,
      );}
  });
  out.push(`1..${s.results.length}`);
  if (s.interrupted) out.push(`# interrupted by ${s.interruptedBy ?? "Ctrl-C"}`);
  return out.join("\n") + "\n";
}
