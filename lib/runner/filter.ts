/**
 * `--filter`: selecting playbooks and steps by name or step path.
 *
 * @module
 */

/** A compiled `--filter`: a substring, or `/regex/flags`. */
export interface StepFilter {
  /** The filter as given. */
  readonly source: string;
  /** True when a playbook name or a step path (`a › b`) matches. */
  matches(text: string): boolean;
  /** True when a nested step of the step at this path could match (substring paths only). */
  mayContain(path: string): boolean;
}

/**
 * Compiles a `--filter` value: `/regex/flags` is a regular expression, any
 * other text a case-sensitive substring. Both are tested against playbook
 * names and step paths (`block › backup › job concludes`).
 */
export function parseFilter(source: string): StepFilter {
  const m = /^\/(.+)\/([dgimsuvy]*)$/s.exec(source);
  if (m) {
    const re = new RegExp(m[1], m[2].replace(/[gy]/g, ""));
    return { source, matches: (text) => re.test(text), mayContain: () => false };
  }
  return {
    source,
    matches: (text) => text.includes(source),
    mayContain: (path) => source.startsWith(`${path} › `),
  };
}
