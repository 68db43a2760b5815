/**
 * The playbook files of a `play` run: resolving the arguments to files with
 * their display paths and sharding keys, and importing each one.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  displayPath,
  playbookFromModule,
  playbookKey,
  resolvePlaybooks,
} from "../../lib/runner/discover.ts";
import { stripAnsi } from "../../lib/runner/failure.ts";
import { PlaybookLoadError } from "../../lib/runner/errors.ts";
import type { Playbook } from "../../lib/runner/playbook.ts";

const PROJECT_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

/** A playbook file of the run, loaded or not. */
export interface Item {
  /** Absolute path. */
  file: string;
  /** As shown (relative to the working directory when inside it). */
  display: string;
  /** The key for sharding and timings (see `playbookKey`). */
  key: string;
  /** The playbook, when it loaded. */
  playbook?: Playbook;
  /** Why it did not load. */
  loadError?: unknown;
  /** Its shard (1-based) with --shard. */
  shard?: number;
}

/** Resolves the arguments to files with their display paths and keys. */
export async function resolveItems(args: readonly string[], cwd: string): Promise<Item[]> {
  const items: Item[] = [];
  const seen = new Set<string>();
  for (const arg of args) {
    const files = await resolvePlaybooks([arg], { cwd, roots: [PROJECT_ROOT] });
    const path = resolve(cwd, arg);
    let base = dirname(path);
    try {
      if ((await Deno.stat(path)).isDirectory) base = path;
    } catch { /* a name: keys relative to the file's directory */ }
    for (const file of files) {
      if (seen.has(file)) continue;
      seen.add(file);
      const b = files.length === 1 && base === dirname(path) ? dirname(file) : base;
      items.push({ file, display: displayPath(file, cwd), key: playbookKey(file, cwd, b) });
    }
  }
  return items;
}

/** Imports every item's playbook; a file that throws at import gets its `loadError`. */
export async function loadItems(items: Item[]): Promise<void> {
  for (const item of items) {
    try {
      item.playbook = await loadPlaybook(item.file, item.display);
    } catch (e) {
      item.loadError = e;
    }
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
