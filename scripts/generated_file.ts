/**
 * Writing (or checking) a generated file, shared by the generators
 * (scripts/gen-qapi.ts and scripts/gen-qapi-agent.ts): `--check` compares
 * without writing; otherwise the file is written only when its text changed.
 *
 * @module
 */

/** Options of {@link syncGeneratedFile}. */
export interface SyncOptions {
  /** Only compare: 1 (and a log line naming `regenerate`) when `out` is out of date. */
  check: boolean;
  /** Receives one line saying what happened. */
  log: (message: string) => void;
  /** How to regenerate, for the out-of-date message (e.g. `scripts/gen-qapi.ts`). */
  regenerate: string;
  /** Create `out`'s directory when missing, before writing. */
  mkdir?: boolean;
}

/** Writes `text` to `out` when it differs, or (`check`) reports whether it does; returns the exit code. */
export async function syncGeneratedFile(
  out: string,
  text: string,
  options: SyncOptions,
): Promise<number> {
  const { log } = options;
  let current: string | null = null;
  try {
    current = await Deno.readTextFile(out);
  } catch {
    current = null;
  }
  if (options.check) {
    if (current !== text) {
      log(`${out} is out of date; regenerate with ${options.regenerate}`);
      return 1;
    }
    log(`${out} is up to date`);
    return 0;
  }
  if (current !== text) {
    if (options.mkdir) await Deno.mkdir(out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
    await Deno.writeTextFile(out, text);
    log(`wrote ${out}`);
  } else log(`${out} unchanged`);
  return 0;
}
