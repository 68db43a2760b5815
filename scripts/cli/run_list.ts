/**
 * `play --list`: the playbooks a run would run (after `playbook.only`,
 * `--tag` and `--shard`), with their tags, skips and top-level steps,
 * without launching anything.
 *
 * @module
 */
import { listPlaybook, type PlaybookListing } from "../../lib/runner/listing.ts";
import { writeErr, writeOut } from "./common.ts";
import type { Item } from "./run_items.ts";
import { noMatchText, type Options } from "./run_options.ts";

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * Lists `items` (this shard's, when `--shard`; `selected` is how many the
 * whole run has) and resolves with the exit code: 1 when a file failed to
 * load, 2 when `--filter` selects nothing.
 */
export async function listCommand(items: Item[], selected: number, opts: Options): Promise<number> {
  const listings: (PlaybookListing & { shard?: number })[] = [];
  const errors: { file: string; message: string }[] = [];
  for (const item of items) {
    if (!item.playbook) {
      errors.push({ file: item.display, message: describe(item.loadError) });
      continue;
    }
    const l = await listPlaybook(item.playbook, { file: item.display, filter: opts.filter });
    if (opts.filter && !l.matched && l.complete && !l.steps.some((s) => s.matched)) continue;
    if (opts.filter && !l.matched) l.steps = l.steps.filter((s) => s.matched);
    listings.push({ ...l, ...(item.shard !== undefined ? { shard: item.shard } : {}) });
  }
  const shard = opts.shard;
  if (opts.reporters.includes("json")) {
    writeOut(
      JSON.stringify(
        {
          version: 1,
          ...(shard ? { shard, selected } : {}),
          playbooks: listings,
          errors,
        },
        null,
        2,
      ) + "\n",
    );
  } else {
    const lines: string[] = [];
    if (shard) {
      lines.push(
        `shard ${shard.index}/${shard.total}: ${items.length} of ${selected} ` +
          `playbook${selected === 1 ? "" : "s"}`,
        "",
      );
    }
    for (const l of listings) {
      const marks = [
        ...(l.tags?.length ? [`tags: ${l.tags.join(", ")}`] : []),
        ...(l.only ? ["only"] : []),
        ...(l.skip ? [`skipped: ${l.skip}`] : []),
      ];
      lines.push(`${l.name}  (${l.file})${marks.length ? `  [${marks.join("; ")}]` : ""}`);
      if (l.description) lines.push(`  ${l.description}`);
      for (const s of l.steps) lines.push(`  • ${s.name}${s.skip ? `  (skip: ${s.skip})` : ""}`);
      if (l.steps.length === 0 && !l.skip) lines.push("  (no top-level steps)");
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
  if (opts.filter && listings.length === 0 && items.length > 0) {
    writeErr(noMatchText(opts.filter, items.length));
    return 2;
  }
  return 0;
}
