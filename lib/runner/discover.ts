/**
 * Finding and loading playbook files: paths, directories (every
 * `*.playbook.ts` below them) and short names (`lifecycle` →
 * `examples/lifecycle.playbook.ts`).
 *
 * @module
 */
import { isAbsolute, join, relative, resolve } from "node:path";
import { PlaybookLoadError } from "./errors.ts";
import { isPlaybook, type Playbook } from "./playbook.ts";

/** File name suffixes of playbooks found in directories. */
export const PLAYBOOK_SUFFIXES: readonly string[] = [
  ".playbook.ts",
  ".playbook.js",
  ".playbook.mts",
];

/** Options of {@link resolvePlaybooks}. */
export interface ResolveOptions {
  /** Directory relative arguments are resolved against (default: `Deno.cwd()`). */
  cwd?: string;
  /** More directories whose `examples/` (and themselves) are searched for short names. */
  roots?: string[];
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

async function walk(dir: string, out: string[]): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith(".") || e.name === "node_modules") continue;
    const path = join(dir, e.name);
    if (e.isDirectory) await walk(path, out);
    else if (PLAYBOOK_SUFFIXES.some((s) => e.name.endsWith(s))) out.push(path);
  }
}

/**
 * Turns command-line arguments into absolute playbook file paths, in order,
 * without duplicates. Each argument is a file, a directory (searched
 * recursively for `*.playbook.ts`), or a name looked up as `NAME.playbook.ts`
 * and `examples/NAME.playbook.ts` under `cwd` and each root. Throws
 * {@link PlaybookLoadError} naming the places searched when nothing matches.
 */
export async function resolvePlaybooks(
  args: readonly string[],
  options: ResolveOptions = {},
): Promise<string[]> {
  const cwd = options.cwd ?? Deno.cwd();
  const roots = [cwd, ...(options.roots ?? [])];
  const files: string[] = [];
  const add = (f: string) => {
    if (!files.includes(f)) files.push(f);
  };
  for (const arg of args) {
    const path = isAbsolute(arg) ? arg : resolve(cwd, arg);
    const info = await statOrNull(path);
    if (info?.isFile) {
      add(path);
      continue;
    }
    if (info?.isDirectory) {
      const found: string[] = [];
      await walk(path, found);
      if (found.length === 0) {
        throw new PlaybookLoadError(arg, `no *.playbook.ts files in this directory`);
      }
      found.forEach(add);
      continue;
    }
    const tried: string[] = [path];
    let hit: string | undefined;
    if (!arg.includes("/")) {
      const base = PLAYBOOK_SUFFIXES.some((s) => arg.endsWith(s)) ? arg : `${arg}.playbook.ts`;
      for (const root of roots) {
        for (const candidate of [join(root, base), join(root, "examples", base)]) {
          if (tried.includes(candidate)) continue;
          tried.push(candidate);
          if ((await statOrNull(candidate))?.isFile) {
            hit = candidate;
            break;
          }
        }
        if (hit) break;
      }
    }
    if (!hit) {
      throw new PlaybookLoadError(
        arg,
        `no such playbook file, directory or name (looked for ${
          tried.map((t) => displayPath(t, cwd)).join(", ")
        })`,
      );
    }
    add(hit);
  }
  return files;
}

/** `path` relative to `cwd` when it is inside it, else absolute. */
export function displayPath(path: string, cwd: string = Deno.cwd()): string {
  const rel = relative(cwd, path);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
}

/**
 * Returns the playbook a module exports as its default, or throws
 * {@link PlaybookLoadError} naming `display` when there is none. (The
 * runner imports playbook files itself, with a dynamic `import()`.)
 */
export function playbookFromModule(mod: Record<string, unknown>, display: string): Playbook {
  const pb = mod.default;
  if (!isPlaybook(pb)) {
    const names = Object.keys(mod);
    throw new PlaybookLoadError(
      display,
      `the default export is not a playbook: use export default playbook({ name, vm }, async (t) => ...)` +
        (names.length ? ` (exports: ${names.join(", ")})` : " (the module exports nothing)"),
    );
  }
  return pb;
}

/**
 * The playbook's key for sharding and timings: its path relative to `cwd`
 * when inside it, else relative to `base` (the directory argument it was
 * found under), with `/` separators — never an absolute path, so every
 * machine computes the same key.
 */
export function playbookKey(file: string, cwd: string, base: string): string {
  const inside = (root: string) => {
    const rel = relative(root, file);
    return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : undefined;
  };
  const rel = inside(cwd) ?? inside(base) ?? file.split(/[\\/]/).pop()!;
  return rel.split(/[\\/]/).join("/");
}
