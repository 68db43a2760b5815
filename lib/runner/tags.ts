/**
 * `--tag` selection: `--tag block --tag !slow` runs playbooks tagged `block`
 * (or any other included tag: includes are OR'ed) that are not tagged `slow`
 * (nor any other excluded tag: excludes are AND'ed). Without an include,
 * every playbook not excluded runs.
 *
 * @module
 */

/** A compiled set of `--tag` values. */
export interface TagFilter {
  /** Tags of which a playbook needs at least one (empty: any playbook). */
  readonly include: readonly string[];
  /** Tags a playbook must have none of. */
  readonly exclude: readonly string[];
  /** True when a playbook with these tags is selected. */
  matches(tags: readonly string[] | undefined): boolean;
}

/** Compiles `--tag` values (`block`, `!slow`); throws a `RangeError` for a malformed one. */
export function parseTags(values: readonly string[]): TagFilter {
  const include: string[] = [];
  const exclude: string[] = [];
  for (const v of values) {
    const m = /^(!?)([^\s,!][^\s,]*)$/.exec(v);
    if (!m) {
      throw new RangeError(
        `--tag ${JSON.stringify(v)}: give one tag (a word without spaces or commas), ` +
          "or !tag to exclude it; repeat --tag for more",
      );
    }
    (m[1] ? exclude : include).push(m[2]);
  }
  return {
    include,
    exclude,
    matches: (tags) => {
      const has = new Set(tags ?? []);
      return (include.length === 0 || include.some((t) => has.has(t))) &&
        exclude.every((t) => !has.has(t));
    },
  };
}
