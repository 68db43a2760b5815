/**
 * The `json` reporter: one JSON document on stdout at the end of the run.
 *
 * @module
 */
import { redactDeep } from "../redact.ts";
import { jsonSafeResults, type RunSummary } from "./results.ts";

/** The JSON document printed by the `json` reporter (JSON-safe results, see `results.ts`). */
export function jsonReport(s: RunSummary): Record<string, unknown> {
  s = redactDeep(s);
  return {
    version: 1,
    ok: s.ok,
    interrupted: s.interrupted,
    ...(s.interruptedBy ? { interruptedBy: s.interruptedBy } : {}),
    durationMs: Math.round(s.durationMs),
    counts: s.counts,
    ...(s.shard ? { shard: s.shard } : {}),
    ...(s.shards ? { shards: s.shards } : {}),
    playbooks: jsonSafeResults(s.results),
  };
}
