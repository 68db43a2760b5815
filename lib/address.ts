/**
 * QMP server addresses: parsing and canonical form.
 *
 * Accepted strings: `unix:/path`, `tcp:HOST:PORT`, `HOST:PORT`, `[IPv6]:PORT`,
 * `tcp:[IPv6]:PORT`, and a bare path (taken as a unix socket): one containing
 * `/`, or a name without `:` such as `qmp.sock` (relative to the current
 * directory; a TCP address always has `:PORT`, so this is unambiguous).
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
export type Address = UnixAddress | TcpAddress | LibvirtAddress;

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
  if (s.startsWith("tcp:")) return parseHostPort(input, s.slice(4));
  if (s.startsWith("libvirt:") || s.startsWith("libvirt+")) return parseLibvirt(input, s);
  if (s.includes("/") || !s.includes(":")) return { transport: "unix", path: s };
  return parseHostPort(input, s);
}

/**
 * Formats an address canonically: `unix:/path`, `tcp:host:port` (`tcp:[::1]:port`
 * for IPv6), `libvirt:DOMAIN` or `libvirt+URI#DOMAIN`.
 */
export function formatAddress(address: Address): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  if (address.transport === "libvirt") {
    return address.uri === undefined
      ? `libvirt:${address.domain}`
      : `libvirt+${address.uri}#${address.domain}`;
  }
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `tcp:${host}:${address.port}`;
}

/**
 * True when a TCP host is a loopback address (`localhost`, `127.x.x.x`, `::1`).
 * Unix sockets and libvirt addresses (libvirt authenticates and, remotely,
 * encrypts its own connections) count as local.
 */
export function isLoopback(address: Address): boolean {
  if (address.transport === "unix" || address.transport === "libvirt") return true;
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
  if (input.transport === "tcp") {
    if (typeof input.hostname !== "string" || input.hostname === "") {
      throw new AddressError(input, "a tcp address needs a hostname");
    }
    return { transport: "tcp", hostname: input.hostname, port: parsePort(input, input.port) };
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
  throw new AddressError(input, 'transport must be "unix", "tcp" or "libvirt"');
}
