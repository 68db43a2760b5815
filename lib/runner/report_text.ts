/**
 * Plain-text pieces shared by reporters: a transcript record as one line, a
 * failure's details as text.
 *
 * @module
 */
import { stringifyJson } from "../json.ts";
import { redactDeep, redactMessage } from "../redact.ts";
import type { Failure, TranscriptRecord } from "./results.ts";

/** Formats one transcript record as a display line. */
export function formatTranscriptLine(rec: TranscriptRecord, max = 200): string {
  const time = rec.time.slice(11, 23);
  const arrow = rec.direction === "send" ? "→" : "←";
  let text = stringifyJson(redactMessage(rec.message)); // redacted before it is cut short
  if (text.length > max) text = text.slice(0, max - 1) + "…";
  return `${time} ${rec.vm} ${arrow} ${text}`;
}

/** Plain-text details of a failure (message, step, diff, QMP messages, console). */
export function failureText(f: Failure): string {
  f = redactDeep(f);
  const lines = [`${f.name}: ${f.message}`, `at: ${f.step}`];
  if (f.diff) lines.push("", f.diff);
  for (const c of f.causes) lines.push(`caused by: ${c}`);
  if (f.transcript.length) {
    lines.push(
      "",
      "last QMP messages:",
      ...f.transcript.map((r) => "  " + formatTranscriptLine(r)),
    );
  }
  if (f.qemuExit) lines.push("", `QEMU ${f.qemuExit}`);
  if (f.consoleTail) {
    lines.push(
      "",
      "serial console (last lines):",
      ...f.consoleTail.split("\n").map((l) => "  " + l),
    );
  }
  return lines.join("\n");
}
