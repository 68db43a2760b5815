/**
 * The `junit` reporter: JUnit XML on stdout, one testsuite per playbook and a
 * testcase per step.
 *
 * @module
 */
import { redactDeep } from "../redact.ts";
import { failureText } from "./report_text.ts";
import type { Failure, PlaybookResult, RunSummary, StepResult } from "./results.ts";

function xml(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "")
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3);
}

/** Failures of earlier attempts, by step path (`a › b`, `(playbook)`, `cleanup`). */
function attemptFailures(r: PlaybookResult): Map<string, Failure[]> {
  const out = new Map<string, Failure[]>();
  const add = (key: string, f: Failure) => out.set(key, [...(out.get(key) ?? []), f]);
  for (const a of r.attempts ?? []) {
    const walk = (steps: StepResult[]) => {
      for (const st of steps) {
        if (st.failure) add(st.path.join(" › "), st.failure);
        walk(st.steps);
      }
    };
    walk(a.steps);
    if (a.failure) add("(playbook)", a.failure);
    for (const f of a.cleanupFailures) add("cleanup", f);
  }
  return out;
}

/**
 * The JUnit XML document printed by the `junit` reporter: one testsuite per
 * playbook, a testcase per step. A flaky playbook (passed on a retry) is a
 * passing suite with the property `qmpkit.flaky`, and each earlier failure
 * is a `<flakyFailure>` inside the passing testcase of its step, as Maven
 * Surefire writes reruns (Jenkins and others show them as flaky).
 */
export function junitReport(s: RunSummary): string {
  s = redactDeep(s); // before XML escaping hides the forms the redactor knows
  const suites: string[] = [];
  let tests = 0;
  let failures = 0;
  let errors = 0;
  let skipped = 0;
  for (const r of s.results) {
    const cases: string[] = [];
    const flaky = r.status === "flaky" ? attemptFailures(r) : new Map<string, Failure[]>();
    const flakyTags = (key: string) => {
      const list = flaky.get(key) ?? [];
      flaky.delete(key);
      return list.map((f) =>
        `<flakyFailure message="${xml(f.message.split("\n")[0])}" type="${xml(f.name)}">` +
        `<stackTrace>${xml(failureText(f))}</stackTrace></flakyFailure>`
      ).join("");
    };
    let sf = 0;
    let se = 0;
    let ss = 0;
    const failureTag = (f: Failure) => {
      const tag = f.name === "ExpectationError" ? "failure" : "error";
      if (tag === "failure") sf++;
      else se++;
      return `<${tag} message="${xml(f.message.split("\n")[0])}" type="${xml(f.name)}">${
        xml(failureText(f))
      }</${tag}>`;
    };
    const walk = (steps: StepResult[]) => {
      for (const st of steps) {
        const name = xml(st.path.join(" › "));
        const attrs = `name="${name}" classname="${xml(r.name)}" time="${seconds(st.durationMs)}"`;
        let body = "";
        if (st.status === "skipped") {
          ss++;
          body = `<skipped message="${xml(st.skipReason ?? "skipped")}"/>`;
        } else if (st.status === "failed") {
          if (st.failure) body = failureTag(st.failure);
          else {
            sf++;
            body = `<failure message="a nested step failed" type="StepFailedError"/>`;
          }
        } else body = flakyTags(st.path.join(" › "));
        cases.push(body ? `    <testcase ${attrs}>${body}</testcase>` : `    <testcase ${attrs}/>`);
        walk(st.steps);
      }
    };
    walk(r.steps);
    if (r.failure) {
      cases.push(
        `    <testcase name="(playbook)" classname="${xml(r.name)}" time="0">${
          failureTag(r.failure)
        }</testcase>`,
      );
    }
    for (const f of r.cleanupFailures) {
      cases.push(
        `    <testcase name="cleanup" classname="${xml(r.name)}" time="0">${
          failureTag(f)
        }</testcase>`,
      );
    }
    if (r.status === "skipped" && cases.length === 0) {
      ss++;
      cases.push(
        `    <testcase name="(playbook)" classname="${xml(r.name)}" time="0"><skipped message="${
          xml(r.skipReason ?? "skipped")
        }"/></testcase>`,
      );
    }
    if (flaky.size > 0) {
      // Earlier failures in steps the passing attempt did not have.
      const rest = [...flaky.keys()].map(flakyTags).join("");
      cases.push(
        `    <testcase name="(earlier attempts)" classname="${
          xml(r.name)
        }" time="0">${rest}</testcase>`,
      );
    }
    const logs = r.logs.map((l) =>
      `${l.time} [${l.source}]${l.path.length ? ` ${l.path.join(" › ")}:` : ""} ${l.message}`
    );
    if (r.status === "flaky") {
      logs.unshift(
        `flaky: failed ${r.attempts?.length ?? 0} time(s), then passed on retry ${r.retry ?? 0}`,
      );
    } else if (r.attempts?.length) {
      logs.unshift(`failed on every attempt (${r.attempts.length + 1})`);
    }
    const props = r.attempts?.length
      ? `    <properties>${
        r.status === "flaky" ? `<property name="qmpkit.flaky" value="true"/>` : ""
      }<property name="qmpkit.retries" value="${r.attempts.length}"/></properties>\n`
      : "";
    const suiteName = r.repeat !== undefined ? `${r.name} (repeat ${r.repeat + 1})` : r.name;
    tests += cases.length;
    failures += sf;
    errors += se;
    skipped += ss;
    suites.push(
      `  <testsuite name="${xml(suiteName)}"${
        r.file ? ` file="${xml(r.file)}"` : ""
      } tests="${cases.length}" ` +
        `failures="${sf}" errors="${se}" skipped="${ss}" time="${seconds(r.durationMs)}">\n` +
        props + cases.join("\n") + (cases.length ? "\n" : "") +
        (logs.length ? `    <system-out>${xml(logs.join("\n"))}</system-out>\n` : "") +
        `  </testsuite>`,
    );
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<testsuites name="qmpkit playbooks" tests="${tests}" failures="${failures}" errors="${errors}" ` +
    `skipped="${skipped}" time="${seconds(s.durationMs)}">\n` +
    suites.join("\n") + (suites.length ? "\n" : "") + `</testsuites>\n`;
}
