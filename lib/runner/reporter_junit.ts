/**
 * The `junit` reporter: JUnit XML on stdout, one testsuite per playbook and a
 * testcase per step.
 *
 * @module
 */
import { failureText } from "./report_text.ts";
import type { Failure, RunSummary, StepResult } from "./results.ts";

function xml(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "")
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3);
}

/** The JUnit XML document printed by the `junit` reporter: one testsuite per playbook. */
export function junitReport(s: RunSummary): string {
  const suites: string[] = [];
  let tests = 0;
  let failures = 0;
  let errors = 0;
  let skipped = 0;
  for (const r of s.results) {
    const cases: string[] = [];
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
        }
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
    const logs = r.logs.map((l) =>
      `${l.time} [${l.source}]${l.path.length ? ` ${l.path.join(" › ")}:` : ""} ${l.message}`
    );
    tests += cases.length;
    failures += sf;
    errors += se;
    skipped += ss;
    suites.push(
      `  <testsuite name="${xml(r.name)}"${
        r.file ? ` file="${xml(r.file)}"` : ""
      } tests="${cases.length}" ` +
        `failures="${sf}" errors="${se}" skipped="${ss}" time="${seconds(r.durationMs)}">\n` +
        cases.join("\n") + (cases.length ? "\n" : "") +
        (logs.length ? `    <system-out>${xml(logs.join("\n"))}</system-out>\n` : "") +
        `  </testsuite>`,
    );
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<testsuites name="qmpkit playbooks" tests="${tests}" failures="${failures}" errors="${errors}" ` +
    `skipped="${skipped}" time="${seconds(s.durationMs)}">\n` +
    suites.join("\n") + (suites.length ? "\n" : "") + `</testsuites>\n`;
}
