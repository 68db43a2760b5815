/**
 * Redaction of secrets before they reach a sink (transcripts, record files,
 * reports, logs, error messages). One module decides what a secret is:
 *
 * - Secret values, replaced by `"<redacted>"`: members named `password`
 *   (or ending in `-password`/`_password`, `passwd`, `passphrase`), `secret`
 *   (e.g. `sev-inject-launch-secret`), `cookie` (curl); the `data` of `secret`
 *   and `secret_keyring` objects (`object-add`, `-object`, HMP `object_add`,
 *   QemuOpts or JSON form); the `value` of `qom-set` and the reply of
 *   `qom-get` (QMP or HMP) for such properties; HMP `set_password`,
 *   `change vnc password`; the password part of URLs (`http://user:PW@`,
 *   `iscsi://user%PW@`); `password=`/`key=` options on QEMU's command line
 *   (`-spice`, `-iscsi`, legacy `rbd:` file names).
 * - References to secrets are kept, so transcripts stay readable: members
 *   ending in `-secret` (`key-secret`, `password-secret`, `new-secret`, ...),
 *   `passwordid` and `keyid` hold the *id* of a `secret` object, not its value.
 * - Values already seen as secrets (at least 6 characters, so short words
 *   are left alone; the last 256) are remembered by the process and replaced
 *   wherever they turn up later in free text, e.g. when QEMU's stderr or an
 *   assertion message repeats them. {@link forgetSecrets} drops them.
 *
 * Redaction never recurses: messages are walked with an explicit stack, so
 * deep input cannot overflow the call stack. Copies keep {@link MAX_DEPTH}
 * levels (QEMU's own JSON parser allows 1024); anything nested deeper is
 * replaced by a placeholder, so sinks that serialize the copy are safe too.
 *
 * @module
 */

/** The placeholder that replaces a secret value. */
export const REDACTED = "<redacted>";

/** Nesting kept in redacted copies; deeper values become {@link TOO_DEEP}. */
export const MAX_DEPTH = 1024;

/** The placeholder that replaces a value nested deeper than {@link MAX_DEPTH}. */
export const TOO_DEEP = `<redacted: nested deeper than ${MAX_DEPTH} levels>`;

/** Member names whose string value is a secret. References (`*-secret`, `passwordid`) are not. */
const SECRET_MEMBER = /^(?:[\w-]*[-_])?(?:password|passwd|passphrase)$|^(?:secret|cookie)$/i;
/** QOM properties whose value is a secret (`qom-get`/`qom-set`). */
const SECRET_PROPERTY = /^(?:data|password|passwd|passphrase|secret|key|cookie)$/i;
/** `qom-type`s whose `data` is the secret. */
const SECRET_TYPES = new Set(["secret", "secret_keyring"]);
/** Booleans kept as is in `password=on` (a VNC option meaning "ask for a password"). */
const BOOLEAN_WORD = /^(?:on|off|true|false|yes|no)$/i;

/** Secret values seen so far, replaced in free text too (bounded; oldest dropped). */
const known = new Set<string>();
const KNOWN_MAX = 256;
const KNOWN_MIN_LENGTH = 6;

function remember(value: unknown): void {
  if (typeof value !== "string" || value.length < KNOWN_MIN_LENGTH || value === REDACTED) return;
  if (known.has(value)) return;
  if (known.size >= KNOWN_MAX) known.delete(known.values().next().value!);
  known.add(value);
}

/**
 * Forgets the secret values remembered so far (see the module docs), so free
 * text is redacted by its form only. For tests, and for long-lived processes
 * that want to drop them.
 */
export function forgetSecrets(): void {
  known.clear();
}

/**
 * Returns a copy of `message` with secret values replaced by `"<redacted>"`;
 * the input is not modified. Non-secret content is kept as is. Arrays and
 * plain objects are copied; other objects (class instances) are kept by
 * reference. Any depth is safe: the walk is iterative, and values nested
 * deeper than {@link MAX_DEPTH} become {@link TOO_DEEP}.
 *
 * @example
 * ```ts
 * import { redactMessage } from "./redact.ts";
 * redactMessage({ execute: "set_password", arguments: { protocol: "vnc", password: "hunter2" } });
 * // { execute: "set_password", arguments: { protocol: "vnc", password: "<redacted>" } }
 * ```
 */
export function redactMessage<T>(message: T): T {
  return walk(message, false) as T;
}

/**
 * Like {@link redactMessage}, and every string in `value` also goes through
 * {@link redactText}. For reports and logs whose strings are free text
 * (error messages, log lines, QEMU's stderr).
 */
export function redactDeep<T>(value: T): T {
  return walk(value, true) as T;
}

/**
 * Redacts a reply to `command` sent with `args`: a secret read back from
 * QEMU (`qom-get` of a `data`/`password`-like property, over QMP or through
 * HMP's `qom-get`) becomes `"<redacted>"`, HMP output goes through
 * {@link redactText}, and the rest through {@link redactMessage}. `reply`
 * may also carry the request itself (`execute`, `arguments`), as in a log
 * record: those are redacted too.
 */
export function redactReply<T>(reply: T, command: string | undefined, args: unknown): T {
  const out = redactMessage(reply);
  if (typeof out !== "object" || out === null || !("return" in out)) return out;
  const value = (out as Record<string, unknown>).return;
  const a = typeof args === "object" && args !== null ? args as Record<string, unknown> : {};
  if (command === "qom-get" && typeof a.property === "string" && SECRET_PROPERTY.test(a.property)) {
    remember(value);
    return { ...out, return: REDACTED } as T;
  }
  if (command === "human-monitor-command" && typeof a["command-line"] === "string") {
    const m = /^\s*qom-get\s+\S+\s+(\S+)\s*$/.exec(a["command-line"]);
    if (m && SECRET_PROPERTY.test(m[1])) {
      // HMP prints the value as JSON: "hunter2"\r\n
      if (typeof value === "string") remember(unquote(value.trim()));
      return { ...out, return: REDACTED } as T;
    }
    if (typeof value === "string") return { ...out, return: redactText(value) } as T;
  }
  return out;
}

/**
 * Redacts secrets in free text: log lines, error messages, QEMU's stderr,
 * HMP command lines, report text. Recognizes the QemuOpts, JSON and HMP forms
 * of secrets, URL passwords, and any value already seen as a secret.
 *
 * @example
 * ```ts
 * import { redactText } from "./redact.ts";
 * redactText("qemu: -object secret,id=s0,data=hunter2,x=1: Invalid parameter 'x'");
 * // "qemu: -object secret,id=s0,data=<redacted>,x=1: Invalid parameter 'x'"
 * ```
 */
export function redactText(text: string): string {
  if (typeof text !== "string" || text === "") return text;
  let out = text.includes("\n") ? text.split("\n").map(redactLine).join("\n") : redactLine(text);
  for (const secret of known) {
    if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  }
  return out;
}

/** Redacts a command line (e.g. QEMU's argv): each argument through {@link redactText}. */
export function redactCommandLine(args: readonly string[]): string[] {
  return args.map((a) => redactText(String(a)));
}

// ------------------------------------------------------------------------- structural walk

function isContainer(v: unknown): v is Record<string, unknown> | unknown[] {
  if (typeof v !== "object" || v === null) return false;
  if (Array.isArray(v)) return true;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function put(dst: Record<string, unknown> | unknown[], key: string | number, value: unknown) {
  if (key === "__proto__") {
    Object.defineProperty(dst, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    (dst as Record<string | number, unknown>)[key] = value;
  }
}

type Container = Record<string, unknown> | unknown[];

function emptyLike(v: Container): Container {
  return Array.isArray(v) ? [] : Object.getPrototypeOf(v) === null ? Object.create(null) : {};
}

/** Containers copied before shared or cyclic references are tracked (JSON input has none). */
const UNTRACKED_CONTAINERS = 1000;

function walk(root: unknown, text: boolean): unknown {
  if (!isContainer(root)) return text && typeof root === "string" ? redactText(root) : root;
  const top = emptyLike(root);
  // Flat explicit stack of [source, copy, depth, "is the props of a secret object"]: no recursion.
  const stack: unknown[] = [root, top, 1, false];
  let copies: Map<object, Container> | undefined;
  let count = 0;
  const child = (v: unknown, depth: number, secretProps: boolean): unknown => {
    if (typeof v !== "object" || v === null) {
      return text && typeof v === "string" ? redactText(v) : v;
    }
    if (!isContainer(v)) return v;
    const seen = copies?.get(v);
    if (seen) return seen;
    if (depth > MAX_DEPTH) return TOO_DEEP;
    const c = emptyLike(v);
    if (++count > UNTRACKED_CONTAINERS) (copies ??= new Map()).set(v, c);
    stack.push(v, c, depth, secretProps);
    return c;
  };
  while (stack.length > 0) {
    const secretProps = stack.pop() as boolean;
    const depth = stack.pop() as number;
    const dst = stack.pop() as Container;
    const src = stack.pop() as Container;
    if (Array.isArray(src)) {
      for (let i = 0; i < src.length; i++) (dst as unknown[])[i] = child(src[i], depth + 1, false);
      continue;
    }
    const secretObject = secretProps || SECRET_TYPES.has(src["qom-type"] as string);
    // qom-set { path, property: "data", value }: the value is the secret.
    const secretValue = typeof src.property === "string" && SECRET_PROPERTY.test(src.property) &&
      "value" in src;
    for (const k of Object.keys(src)) {
      const v = src[k];
      let out: unknown;
      if (
        (typeof v === "string" || typeof v === "number" || typeof v === "bigint") &&
        (SECRET_MEMBER.test(k) || (secretObject && k === "data") ||
          (secretValue && k === "value"))
      ) {
        remember(v);
        out = REDACTED;
      } else if (typeof v === "string" && !text && (k === "command-line" || v.includes("://"))) {
        out = k === "command-line" ? redactText(v) : redactUrls(v);
      } else {
        // Pre-6.0 object-add nested the properties: { "qom-type": "secret", "props": { data } }
        out = child(v, depth + 1, secretObject && k === "props");
      }
      put(dst, k, out);
    }
  }
  return top;
}

// ------------------------------------------------------------------------------ free text

/** A JSON string body (no quotes). */
const JSON_STR = String.raw`(?:[^"\\]|\\.)*`;
/** A JSON string body inside a JSON string (`\"...\"`): escaped quotes end it. */
const JSON_STR_ESCAPED = String.raw`(?:[^"\\]|\\\\|\\[^"\\])*`;
const SECRET_JSON_KEY = String.raw`[\w-]*(?:password|passwd|passphrase)|secret|cookie`;
const JSON_SECRET = new RegExp(`("(?:${SECRET_JSON_KEY})"\\s*:\\s*")(${JSON_STR})(?=")`, "gi");
const JSON_SECRET_ESC = new RegExp(
  String.raw`(\\"(?:${SECRET_JSON_KEY})\\"\s*:\s*\\")(${JSON_STR_ESCAPED})(?=\\")`,
  "gi",
);
const JSON_DATA = new RegExp(`("data"\\s*:\\s*")(${JSON_STR})(?=")`, "g");
const JSON_DATA_ESC = new RegExp(
  String.raw`(\\"data\\"\s*:\s*\\")(${JSON_STR_ESCAPED})(?=\\")`,
  "g",
);
const JSON_VALUE = new RegExp(`("value"\\s*:\\s*")(${JSON_STR})(?=")`, "g");
const JSON_VALUE_ESC = new RegExp(
  String.raw`(\\"value\\"\s*:\s*\\")(${JSON_STR_ESCAPED})(?=\\")`,
  "g",
);
const JSON_SECRET_PROPERTY =
  /\\?"property\\?"\s*:\s*\\?"(?:data|password|passwd|passphrase|secret|key|cookie)\\?"/i;
/** QemuOpts values end at a comma (",," is an escaped comma) or white space. */
const OPT_VALUE = String.raw`(?:[^,\s]|,,)*`;
const OPT_SECRET = new RegExp(
  String
    .raw`((?:^|[,\s:])(?:(?:[\w-]*[-_])?(?:password|passwd|passphrase)|secret|cookie)=)(${OPT_VALUE})`,
  "gi",
);
const OPT_DATA = new RegExp(String.raw`((?:^|[,\s])data=)(${OPT_VALUE})`, "g");
/** Legacy `rbd:pool/image:id=admin:key=...` file names: values end at a colon. */
const RBD_KEY = /(:key=)((?:[^:\s,\\]|\\.)*)/g;
/** HMP arguments: a quoted string or a word. */
const HMP_ARG = String.raw`(?:"(?:[^"\\]|\\.)*"|\S+)`;
const HMP_SET_PASSWORD = new RegExp(String.raw`(\bset_password\s+\S+\s+)(${HMP_ARG})`, "g");
const HMP_CHANGE_VNC = new RegExp(String.raw`(\bchange\s+vnc\s+password\s+)(${HMP_ARG})`, "g");
/** HMP `qom-set [-j] PATH PROPERTY VALUE`: the value is the rest of the line. */
const HMP_QOM_SET =
  /(\bqom-set\s+(?:-j\s+)?\S+\s+(?:data|password|passwd|passphrase|secret|key|cookie)\s+)(.+)$/i;
/** The shell's `qom-set path=... property=data value=SECRET` spelling. */
const KV_SECRET_PROPERTY =
  /(?:^|\s)property=(?:data|password|passwd|passphrase|secret|key|cookie)(?:\s|$)/i;
const KV_VALUE = new RegExp(String.raw`((?:^|\s)value=)(${HMP_ARG})`, "g");
/** The password of a URL's user info: `scheme://user:PW@`, iscsi's `scheme://user%PW@`. */
const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]{0,31}:\/\/[^\s/@:%"'\\]*[:%])([^\s/@"'\\]*)@/gi;

function redactUrls(s: string): string {
  return s.replace(URL_PASSWORD, (_m, head, pw) => {
    remember(pw);
    return `${head}${REDACTED}@`;
  });
}

/** Replacer that remembers the secret it drops; keeps `password=on`-style booleans. */
function drop(keepBooleans: boolean) {
  return (match: string, head: string, value: string) => {
    if (keepBooleans && BOOLEAN_WORD.test(value)) return match;
    if (value === "" || value.includes(REDACTED)) return match;
    remember(value);
    return head + REDACTED;
  };
}

function redactLine(line: string): string {
  let s = line;
  if (s.includes("=") || s.includes(":")) {
    s = s.replace(OPT_SECRET, drop(true));
    if (/secret/i.test(s)) s = s.replace(OPT_DATA, drop(false));
    if (s.includes("rbd:")) s = s.replace(RBD_KEY, drop(false));
    if (s.includes("://")) s = redactUrls(s);
  }
  if (s.includes('"')) {
    s = s.replace(JSON_SECRET, drop(true)).replace(JSON_SECRET_ESC, drop(true));
    if (/secret/i.test(s)) {
      s = s.replace(JSON_DATA, drop(false)).replace(JSON_DATA_ESC, drop(false));
    }
    if (JSON_SECRET_PROPERTY.test(s)) {
      s = s.replace(JSON_VALUE, drop(false)).replace(JSON_VALUE_ESC, drop(false));
    }
  }
  if (s.includes("set_password")) s = s.replace(HMP_SET_PASSWORD, drop(false));
  if (s.includes("change")) s = s.replace(HMP_CHANGE_VNC, drop(false));
  if (s.includes("qom-set")) s = s.replace(HMP_QOM_SET, drop(false));
  if (KV_SECRET_PROPERTY.test(s)) s = s.replace(KV_VALUE, drop(false));
  return s;
}

function unquote(s: string): string {
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) {
    try {
      const v = JSON.parse(s);
      if (typeof v === "string") return v;
    } catch { /* not JSON */ }
  }
  return s;
}
