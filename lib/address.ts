/**
 * QMP server addresses: parsing and canonical form.
 *
 * Accepted strings: `unix:/path`, `tcp:HOST:PORT`, `HOST:PORT`, `[IPv6]:PORT`,
 * `tcp:[IPv6]:PORT`, `tls://HOST:PORT` (QEMU's TLS monitor), and a bare path
 * (taken as a unix socket): one containing `/`, or a name without `:` such as
 * `qmp.sock` (relative to the current directory; a TCP address always has
 * `:PORT`, so this is unambiguous). `ssh://[USER@]HOST[:PORT]/PATH` is a unix
 * socket on another host, reached through the system `ssh` client. Any other
 * `SCHEME://` is refused.
 *
 * libvirt domains: `libvirt:DOMAIN` (the default connection URI:
 * `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`) and `libvirt+URI#DOMAIN`
 * with any libvirt URI, e.g. `libvirt+qemu:///system#vm1` or
 * `libvirt+qemu+ssh://root@host/system#vm1` (the domain follows the last `#`).
 *
 * @module
 */
import { AddressError } from "./errors.ts";

/** A unix domain socket address. */
export interface UnixAddress {
  /** Discriminator. */
  transport: "unix";
  /** Filesystem path of the socket. */
  path: string;
}

/** A TCP address. */
export interface TcpAddress {
  /** Discriminator. */
  transport: "tcp";
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** Port number, 1-65535. */
  port: number;
}

/** A TCP address whose stream is TLS (a QEMU chardev with `tls-creds`). */
export interface TlsAddress {
  /** Discriminator. */
  transport: "tls";
  /** Host name or IP address (IPv6 without brackets); also the name the certificate must carry. */
  hostname: string;
  /** Port number, 1-65535. */
  port: number;
}

/**
 * A unix socket on another host, reached with the system `ssh` client
 * (`ssh://[USER@]HOST[:PORT]/PATH`). User and port default to ssh's own
 * (`~/.ssh/config`, the login name, 22).
 */
export interface SshAddress {
  /** Discriminator. */
  transport: "ssh";
  /** Remote login name; omitted: ssh decides. */
  user?: string;
  /** Host name, IP address (IPv6 without brackets) or `ssh_config` Host alias. */
  hostname: string;
  /** sshd port; omitted: ssh decides (22 unless configured). */
  port?: number;
  /** Absolute path of QEMU's QMP socket on the remote host. */
  path: string;
}

/** A domain managed by libvirt, reached through libvirt's QMP passthrough. */
export interface LibvirtAddress {
  /** Discriminator. */
  transport: "libvirt";
  /** libvirt connection URI (`qemu:///system`, `qemu+ssh://host/system`); default: `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`. */
  uri?: string;
  /** Domain name (or UUID). */
  domain: string;
}

/** A parsed QMP address. */
export type Address = UnixAddress | TcpAddress | TlsAddress | SshAddress | LibvirtAddress;

/**
 * The `SCHEME://` forms and how each is parsed (the rest after `://`). A new
 * remote transport adds its scheme here.
 */
const URL_SCHEMES: Record<string, (original: string, rest: string) => Address> = {
  tls: (original, rest) => {
    if (rest.includes("/")) {
      throw new AddressError(original, "a tls:// address takes no path, only HOST:PORT");
    }
    const { hostname, port } = parseHostPort(original, rest);
    return { transport: "tls", hostname, port };
  },
  ssh: (original, rest) => parseSsh(original, `ssh://${rest}`),
};

/**
 * Parses an address string or validates an address object. Throws
 * {@link AddressError} before any I/O when the address is malformed.
 *
 * @example
 * ```ts
 * import { parseAddress } from "./address.ts";
 * parseAddress("unix:/run/vm1/qmp.sock"); // { transport: "unix", path: "/run/vm1/qmp.sock" }
 * parseAddress("[::1]:4444"); // { transport: "tcp", hostname: "::1", port: 4444 }
 * parseAddress("qmp.sock"); // { transport: "unix", path: "qmp.sock" }
 * parseAddress("ssh://root@vm-host/run/vm1/qmp.sock"); // { transport: "ssh", user: "root", ... }
 * ```
 */
export function parseAddress(input: string | Address): Address {
  if (typeof input === "object" && input !== null) return validateObject(input);
  if (typeof input !== "string") throw new AddressError(input, "expected a string or an object");
  const s = input.trim();
  if (s === "") throw new AddressError(input, "the address is empty");
  if (s.startsWith("unix:")) {
    const path = s.slice(5);
    if (path === "") throw new AddressError(input, "the unix socket path is empty");
    return { transport: "unix", path };
  }
  // Before the SCHEME:// table: libvirt+qemu+ssh://host/system#vm1 carries a URI of its own.
  if (s.startsWith("libvirt:") || s.startsWith("libvirt+")) return parseLibvirt(input, s);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(s);
  if (scheme) {
    const name = scheme[1].toLowerCase();
    const parse = URL_SCHEMES[name];
    if (!parse) {
      throw new AddressError(
        input,
        `unknown scheme "${name}://" (known: ${
          Object.keys(URL_SCHEMES).map((k) => `${k}://`).join(", ")
        })`,
      );
    }
    return parse(input, s.slice(scheme[0].length));
  }
  if (/^tls:/i.test(s)) {
    throw new AddressError(input, 'TLS addresses are written "tls://HOST:PORT"');
  }
  if (/^ssh:/i.test(s)) {
    throw new AddressError(input, 'ssh addresses are written "ssh://[USER@]HOST[:PORT]/PATH"');
  }
  if (s.startsWith("tcp:")) return parseHostPort(input, s.slice(4));
  if (s.includes("/") || !s.includes(":")) return { transport: "unix", path: s };
  return parseHostPort(input, s);
}

/**
 * Formats an address canonically: `unix:/path`, `tcp:host:port`,
 * `tls://host:port` (IPv6 hosts in brackets), `ssh://[user@]host[:port]/path`,
 * `libvirt:DOMAIN` or `libvirt+URI#DOMAIN`.
 */
export function formatAddress(address: Address): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  if (address.transport === "libvirt") {
    return address.uri === undefined
      ? `libvirt:${address.domain}`
      : `libvirt+${address.uri}#${address.domain}`;
  }
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  if (address.transport === "ssh") {
    const user = address.user === undefined ? "" : `${address.user}@`;
    const port = address.port === undefined ? "" : `:${address.port}`;
    return `ssh://${user}${host}${port}${address.path}`;
  }
  return address.transport === "tls"
    ? `tls://${host}:${address.port}`
    : `tcp:${host}:${address.port}`;
}

/**
 * True when the address does not expose plain QMP to a network: a unix socket,
 * an ssh tunnel (encrypted, authenticated), a libvirt domain (libvirt
 * authenticates and, remotely, encrypts its own connections), or a TCP or TLS
 * loopback host (`localhost`, `127.x.x.x`, `::1`).
 */
export function isLoopback(address: Address): boolean {
  if (address.transport === "unix" || address.transport === "ssh") return true;
  if (address.transport === "libvirt") return true;
  const h = address.hostname.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function parseLibvirt(original: string, s: string): LibvirtAddress {
  if (s.startsWith("libvirt:")) {
    const domain = s.slice(8);
    if (domain === "") throw new AddressError(original, "the libvirt domain name is empty");
    if (domain.includes("/") || domain.includes("#")) {
      throw new AddressError(
        original,
        "a libvirt URI is written libvirt+URI#DOMAIN, e.g. libvirt+qemu:///system#vm1",
      );
    }
    return { transport: "libvirt", domain };
  }
  const hash = s.lastIndexOf("#");
  if (hash < 0) {
    throw new AddressError(
      original,
      "missing '#DOMAIN' after the libvirt URI, e.g. libvirt+qemu:///system#vm1",
    );
  }
  const uri = s.slice(8, hash);
  const domain = s.slice(hash + 1);
  if (!/^[a-z][a-z0-9+.-]*:/i.test(uri)) {
    throw new AddressError(original, `${JSON.stringify(uri)} is not a libvirt URI`);
  }
  if (domain === "") throw new AddressError(original, "the libvirt domain name is empty");
  return { transport: "libvirt", uri, domain };
}

function parseHostPort(original: string, rest: string): TcpAddress {
  let host: string;
  let portText: string;
  if (rest.startsWith("[")) {
    const end = rest.indexOf("]");
    if (end < 0) throw new AddressError(original, "missing ']' after an IPv6 address");
    host = rest.slice(1, end);
    if (rest[end + 1] !== ":") throw new AddressError(original, "missing ':PORT' after ']'");
    portText = rest.slice(end + 2);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon < 0) throw new AddressError(original, "missing ':PORT'");
    host = rest.slice(0, colon);
    portText = rest.slice(colon + 1);
    if (host.includes(":")) {
      throw new AddressError(
        original,
        "IPv6 addresses must be written in brackets, e.g. [::1]:4444",
      );
    }
  }
  if (host === "") throw new AddressError(original, "the host is empty");
  return { transport: "tcp", hostname: host, port: parsePort(original, portText) };
}

function parsePort(original: unknown, text: string | number): number {
  const port = typeof text === "number" ? text : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new AddressError(
      original,
      `port ${JSON.stringify(text)} is not a number from 1 to 65535`,
    );
  }
  return port;
}

function validateObject(input: Address): Address {
  if (input.transport === "unix") {
    if (typeof input.path !== "string" || input.path === "") {
      throw new AddressError(input, "a unix address needs a non-empty path");
    }
    return { transport: "unix", path: input.path };
  }
  if (input.transport === "tcp" || input.transport === "tls") {
    if (typeof input.hostname !== "string" || input.hostname === "") {
      throw new AddressError(input, `a ${input.transport} address needs a hostname`);
    }
    return {
      transport: input.transport,
      hostname: input.hostname,
      port: parsePort(input, input.port),
    };
  }
  if (input.transport === "libvirt") {
    if (typeof input.domain !== "string" || input.domain === "") {
      throw new AddressError(input, "a libvirt address needs a domain");
    }
    if (input.uri !== undefined && (typeof input.uri !== "string" || input.uri === "")) {
      throw new AddressError(input, "a libvirt uri must be a non-empty string");
    }
    return input.uri === undefined
      ? { transport: "libvirt", domain: input.domain }
      : { transport: "libvirt", uri: input.uri, domain: input.domain };
  }
  if (input.transport === "ssh") return validateSsh(input, input);
  throw new AddressError(input, 'transport must be "unix", "tcp", "tls", "ssh" or "libvirt"');
}

/** `ssh://[USER@]HOST[:PORT]/PATH`; HOST may be `[IPv6]`. No percent-decoding. */
function parseSsh(original: string, s: string): SshAddress {
  if (!/^ssh:\/\//i.test(s)) throw new AddressError(original, "expected ssh://...");
  const rest = s.slice(6);
  const slash = rest.indexOf("/");
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? "" : rest.slice(slash);
  const at = authority.lastIndexOf("@");
  const user = at < 0 ? undefined : authority.slice(0, at);
  const hostPort = authority.slice(at + 1);
  let hostname: string;
  let portText: string | undefined;
  if (hostPort.startsWith("[")) {
    const end = hostPort.indexOf("]");
    if (end < 0) throw new AddressError(original, "missing ']' after an IPv6 address");
    hostname = hostPort.slice(1, end);
    const after = hostPort.slice(end + 1);
    if (after !== "" && !after.startsWith(":")) {
      throw new AddressError(original, "expected ':PORT' or '/PATH' after ']'");
    }
    portText = after === "" ? undefined : after.slice(1);
  } else {
    const colon = hostPort.indexOf(":");
    hostname = colon < 0 ? hostPort : hostPort.slice(0, colon);
    portText = colon < 0 ? undefined : hostPort.slice(colon + 1);
  }
  const address: SshAddress = { transport: "ssh", hostname, path };
  if (user !== undefined) address.user = user;
  if (portText !== undefined) address.port = parsePort(original, portText);
  return validateSsh(original, address);
}

function validateSsh(original: unknown, input: SshAddress): SshAddress {
  const { hostname, user, port, path } = input;
  if (typeof hostname !== "string" || hostname === "") {
    throw new AddressError(
      original,
      typeof original === "string" ? "the host is empty" : "an ssh address needs a hostname",
    );
  }
  if (user !== undefined && (typeof user !== "string" || user === "")) {
    throw new AddressError(original, "the user is empty (leave out '@' to let ssh choose)");
  }
  // ssh would take "-oProxyCommand=..." as an option, not a host or a user.
  for (const [what, value] of [["host", hostname], ["user", user]] as const) {
    if (value === undefined) continue;
    if (value.startsWith("-")) {
      throw new AddressError(original, `the ${what} may not start with '-'`);
    }
    if (/\s/.test(value) || hasControl(value)) {
      throw new AddressError(original, `the ${what} contains a space or control character`);
    }
  }
  if (typeof path !== "string" || path === "" || path === "/") {
    throw new AddressError(
      original,
      "the remote socket path is missing (e.g. ssh://host/run/vm1/qmp.sock)",
    );
  }
  if (!path.startsWith("/")) {
    throw new AddressError(original, "the remote socket path must be absolute");
  }
  if (path.includes(":")) {
    // ssh -L LOCAL:REMOTE has no way to quote a ':' in a socket path.
    throw new AddressError(original, "the remote socket path may not contain ':'");
  }
  if (hasControl(path)) {
    throw new AddressError(original, "the remote socket path contains a control character");
  }
  const out: SshAddress = { transport: "ssh", hostname, path };
  if (user !== undefined) out.user = user;
  if (port !== undefined) out.port = parsePort(original, port);
  return out;
}

function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
