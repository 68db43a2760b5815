/**
 * Replaying finished results into a reporter, as if the run were live:
 * `merge-reports` uses it so that merged shards print exactly like one run.
 *
 * @module
 */
import type { Reporter } from "./reporters.ts";
import type { RunSummary, StepResult } from "./results.ts";

/**
 * Drives `reporter` through a finished run: `runStart`, then per playbook
 * (its earlier attempts first, each followed by `retrying`) `playbookStart`,
 * `stepStart`/`stepEnd` (nested steps inside their parents), `playbookEnd`,
 * and finally `runEnd(summary)`.
 */
export async function replay(summary: RunSummary, reporter: Reporter): Promise<void> {
  reporter.runStart?.(summary.results.map((r) => ({ name: r.name, file: r.file })));
  summary.results.forEach((final, index) => {
    const attempts = [...(final.attempts ?? []), final];
    attempts.forEach((r, attempt) => {
      const info = {
        index,
        name: r.name,
        ...(r.file !== undefined ? { file: r.file } : {}),
        ...(attempt > 0 ? { retry: attempt } : {}),
        ...(r.repeat !== undefined ? { repeat: r.repeat } : {}),
      };
      reporter.playbookStart?.(info);
      const logsAt = (path: readonly string[]) => {
        const key = path.join("\u0000");
        for (const e of r.logs) if (e.path.join("\u0000") === key) reporter.log?.(info, e);
      };
      logsAt([]);
      const walk = (steps: StepResult[]) => {
        for (const s of steps) {
          if (s.status !== "skipped") reporter.stepStart?.(info, { name: s.name, path: s.path });
          logsAt(s.path);
          walk(s.steps);
          reporter.stepEnd?.(info, s);
        }
      };
      walk(r.steps);
      if (attempt < attempts.length - 1) reporter.retrying?.(info, attempt);
      reporter.playbookEnd?.(info, r);
    });
  });
  await reporter.runEnd(summary);
}
