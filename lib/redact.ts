/**
 * Redaction of secrets in QMP messages before they reach logs and
 * transcripts: passwords, `secret` objects' data, `set_password`, and any
 * member whose name ends in `password` or `secret`.
 *
 * @module
 */

/** The placeholder that replaces a secret value. */
export const REDACTED = "<redacted>";

const SECRET_KEY = /(^|[-_])(password|passwd|secret|passphrase|key-secret)$/i;

/**
 * Returns a copy of `message` with secret values replaced by `"<redacted>"`;
 * the input is not modified. Non-secret content is kept as is.
 *
 * @example
 * ```ts
 * import { redactMessage } from "./redact.ts";
 * redactMessage({ execute: "set_password", arguments: { protocol: "vnc", password: "hunter2" } });
 * // { execute: "set_password", arguments: { protocol: "vnc", password: "<redacted>" } }
 * ```
 */
export function redactMessage<T>(message: T): T {
  return redactValue(message) as T;
}

function redactValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => redactValue(v));
  if (typeof value !== "object" || value === null) return value;
  const obj = value as Record<string, unknown>;
  // object-add of a `secret` object carries the secret in `data` (or a `file`, which is fine).
  const isSecretObject = obj["qom-type"] === "secret" || obj["qom-type"] === "secret_keyring";
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (
      (typeof v === "string" || typeof v === "number" || typeof v === "bigint") &&
      (SECRET_KEY.test(k) || (isSecretObject && k === "data"))
    ) {
      out[k] = REDACTED;
    } else if (k === "command-line" && typeof v === "string") {
      out[k] = redactHmp(v);
    } else {
      out[k] = redactValue(v);
    }
  }
  return out;
}

/** HMP lines that carry secrets: `set_password vnc PASS`, `object_add secret,...,data=X`. */
function redactHmp(line: string): string {
  const set = /^(\s*(?:set_password\s+\S+|change\s+vnc\s+password)\s+)(\S+)/.exec(line);
  if (set) return set[1] + REDACTED + line.slice(set[0].length);
  // QemuOpts values end at a comma; ",," is an escaped comma inside the value.
  return line.replace(/((?:^|,)(?:data|password|secret)=)(?:[^,\s]|,,)*/g, `$1${REDACTED}`);
}

const SECRET_PROPERTY = /^(data|password|passwd|passphrase|secret|key)$/i;

/**
 * Redacts a reply whose value is a secret read back from QEMU: `qom-get` of a
 * `data`/`password`-like property (e.g. a `secret` object's data). Other
 * replies go through {@link redactMessage}.
 */
export function redactReply<T>(reply: T, command: string | undefined, args: unknown): T {
  const property = typeof args === "object" && args !== null
    ? (args as Record<string, unknown>).property
    : undefined;
  if (
    command === "qom-get" && typeof property === "string" && SECRET_PROPERTY.test(property) &&
    typeof reply === "object" && reply !== null && "return" in reply
  ) {
    return { ...reply, return: REDACTED } as T;
  }
  return redactMessage(reply);
}
