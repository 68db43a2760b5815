/**
 * The TLS transport: QMP over QEMU's own TLS (a socket chardev with
 * `tls-creds=` an `tls-creds-x509` object), on `Deno.connectTls`, with client
 * certificates for monitors that verify the peer (`verify-peer=on`).
 *
 * @module
 */
import { formatAddress, type TlsAddress } from "./address.ts";
import { boundedWait } from "./deadline.ts";
import { AbortError, TimeoutError, TlsError, type TlsFailure } from "./errors.ts";
import type { OpenOptions, Transport } from "./transport.ts";

/**
 * TLS settings of a `tls://` connection. Each credential is given either as
 * PEM text or as a file path (read at every connect, so a reconnect picks up
 * renewed files); errors name files by path, never their contents.
 *
 * @example
 * ```ts ignore
 * await connect("tls://127.0.0.1:4444", {
 *   tls: { caFile: "/etc/pki/qemu/ca-cert.pem", certFile: "client-cert.pem", keyFile: "client-key.pem" },
 * });
 * ```
 */
export interface TlsOptions {
  /**
   * CA certificates (PEM) that may sign the server's certificate: for QEMU, the
   * `ca-cert.pem` of its `tls-creds-x509` directory. Without `caCerts` or
   * `caFile`, the system's default roots are used.
   */
  caCerts?: string[];
  /** Path of a PEM file with the CA certificate(s); see `caCerts`. */
  caFile?: string;
  /** Client certificate chain (PEM), for a monitor with `verify-peer=on`. Needs `key`. */
  cert?: string;
  /** Path of the client certificate file (PEM); see `cert`. */
  certFile?: string;
  /** Client private key (PEM). Never printed. */
  key?: string;
  /** Path of the client private key file (PEM); see `key`. */
  keyFile?: string;
  /**
   * The name the server's certificate must carry, when it is not the address's
   * host (e.g. connect to an IP, check `vm1.example`). Deno cannot combine it
   * with a client certificate (`Deno.startTls` takes none).
   */
  hostname?: string;
}

/** The credentials as PEM text. */
interface Credentials {
  caCerts: string[];
  cert?: string;
  key?: string;
}

const CA_FLAG = "tls.caCerts/caFile (--tls-ca FILE)";

/**
 * Opens a TLS connection to a QEMU TLS monitor within `options.deadline`: TCP
 * connect, the TLS handshake, then the first bytes (QEMU greets at once, and a
 * monitor with `verify-peer=on` closes the connection right after the
 * handshake when it refuses the client's certificate, or when there is none).
 * TCP-level errors (refused, ...) are thrown as they are, for the caller's
 * retry; TLS failures are {@link TlsError}s naming the cause and what to do.
 */
export async function openTlsTransport(
  address: TlsAddress,
  tls: TlsOptions,
  options: OpenOptions,
): Promise<Transport> {
  const where = formatAddress(address);
  const creds = await loadCredentials(tls, where);
  const name = tls.hostname && tls.hostname !== address.hostname ? tls.hostname : undefined;
  if (name !== undefined && creds.cert !== undefined) {
    throw new TlsError(
      `Cannot check the name ${JSON.stringify(name)} and present a client certificate at once ` +
        `(Deno.startTls takes no client certificate): connect to tls://${name}:${address.port} ` +
        `(make the name resolve, e.g. in /etc/hosts) and drop tls.hostname`,
      { kind: "credentials", address: where },
    );
  }
  const checked = name ?? address.hostname;
  let conn: Deno.TlsConn | undefined;
  const step = <T>(what: string, pending: Promise<T>, late?: (value: T) => void) =>
    bounded(where, what, pending, options, () => conn?.close(), late);
  try {
    if (creds.cert !== undefined) {
      // Only Deno.connectTls presents a client certificate; it takes no signal, so a
      // connect that completes after the deadline is closed then.
      conn = await step(
        "connect",
        Deno.connectTls({
          hostname: address.hostname,
          port: address.port,
          caCerts: creds.caCerts,
          cert: creds.cert,
          key: creds.key!,
        }),
        (c) => c.close(),
      );
    } else {
      // A cancellable TCP connect, then TLS on it (which can check another name).
      const deadline = AbortSignal.timeout(Math.max(1, options.deadline - Date.now()));
      const tcp = await step(
        "connect",
        Deno.connect({
          hostname: address.hostname,
          port: address.port,
          signal: options.signal ? AbortSignal.any([options.signal, deadline]) : deadline,
        }).catch((err) => {
          if (deadline.aborted || options.signal?.aborted) return new Promise<never>(() => {});
          throw err;
        }),
        (c) => c.close(),
      );
      conn = await step(
        "connect",
        Deno.startTls(tcp, { hostname: checked, caCerts: creds.caCerts }),
        (c) => c.close(),
      );
    }
  } catch (err) {
    throw tlsFailure(err, where, checked, "connect", creds.cert !== undefined);
  }
  const cert = creds.cert !== undefined;
  let phase: "handshake" | "greeting" = "handshake";
  try {
    await step("handshake", conn!.handshake());
    phase = "greeting";
    const first = new Uint8Array(4096);
    const n = await step("greeting", conn!.read(first));
    if (n === null) throw new Deno.errors.UnexpectedEof("closed after the handshake");
    return new TlsTransport(conn!, first.subarray(0, n));
  } catch (err) {
    try {
      conn!.close();
    } catch { /* closed */ }
    throw tlsFailure(err, where, checked, phase, cert);
  }
}

/**
 * A TLS connection as a {@link Transport}: the bytes read while opening come
 * first, an end without TLS close_notify is an end of stream (QEMU closes
 * without one), and writes work around QEMU 7.2's TLS monitor stall.
 */
class TlsTransport implements Transport {
  #conn: Deno.TlsConn;
  #first: Uint8Array | undefined;

  constructor(conn: Deno.TlsConn, first: Uint8Array) {
    this.#conn = conn;
    this.#first = first.length > 0 ? first : undefined;
  }

  async read(p: Uint8Array): Promise<number | null> {
    const first = this.#first;
    if (first) {
      const n = Math.min(p.length, first.length);
      p.set(first.subarray(0, n));
      this.#first = n < first.length ? first.subarray(n) : undefined;
      return n;
    }
    try {
      return await this.#conn.read(p);
    } catch (err) {
      if (err instanceof Deno.errors.UnexpectedEof) return null;
      throw err;
    }
  }

  /**
   * Writes all of `p`, its last byte in a TLS record of its own.
   *
   * Why: QEMU 7.2's monitor reads its chardev one byte per read (it accepts
   * input a byte at a time), and after each read it waits for the socket to be
   * readable again. Over TLS, gnutls decrypts a whole record and keeps the rest
   * of its plaintext in its own buffer, which does not make the socket
   * readable: a message that ends a record with nothing after it is never read
   * past its first byte, not even the first `qmp_capabilities`. Every record
   * that arrives later makes QEMU drain what gnutls holds, one byte per pass.
   *
   * So the final byte of every write travels alone: a 1-byte record is consumed
   * whole by QEMU's 1-byte read, and while gnutls holds any earlier plaintext,
   * that last record is still unread on the socket, which keeps QEMU reading.
   * This holds however large the write (rustls splits it into 16 KiB records;
   * each is followed by more) and however many commands it carries (the
   * client writes its queue in one go; QEMU may suspend the monitor after a
   * command, but only ever with the final record still on the socket).
   *
   * It is the smallest fix: QEMU gets exactly the same bytes (a trailing
   * newline record would add one per write), it costs one record per write,
   * not per command, and nothing is sent that QEMU did not ask for.
   */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    await this.#writeAll(p.subarray(0, p.length - 1));
    await this.#writeAll(p.subarray(p.length - 1));
    return p.length;
  }

  async #writeAll(p: Uint8Array): Promise<void> {
    let off = 0;
    while (off < p.length) off += await this.#conn.write(p.subarray(off));
  }

  close(): void {
    this.#conn.close();
  }
}

/** Awaits one step of the connection within the deadline; `late` disposes of a value that comes too late. */
async function bounded<T>(
  where: string,
  what: string,
  pending: Promise<T>,
  options: OpenOptions,
  giveUp: () => void,
  late?: (value: T) => void,
): Promise<T> {
  const remaining = options.deadline - Date.now();
  let settled = false;
  try {
    return await boundedWait<T>(`Connecting to ${where}`, {
      timeout: Math.max(1, remaining),
      signal: options.signal,
    }, (resolve, reject) => {
      pending.then(
        (v) => settled ? late?.(v) : resolve(v),
        (e) => settled ? undefined : reject(e),
      );
    }, { onGiveUp: giveUp });
  } catch (err) {
    settled = true;
    if (err instanceof TimeoutError) {
      throw new TimeoutError(`Connecting to ${where}`, options.timeoutMs, {
        cause: err,
        hint: what === "connect"
          ? "no TCP connection"
          : what === "handshake"
          ? "the TLS handshake was not answered: is this a TLS monitor (tls-creds=...)? " +
            "Is another client connected (QMP serves one at a time)?"
          : "no QMP greeting after the TLS handshake (QMP serves one client at a time)",
      });
    }
    throw err;
  } finally {
    settled = true;
  }
}

async function loadCredentials(tls: TlsOptions, where: string): Promise<Credentials> {
  const bad = (message: string, cause?: unknown) =>
    new TlsError(message, { kind: "credentials", address: where, cause });
  if (tls.caCerts !== undefined && tls.caFile !== undefined) {
    throw bad("Give tls.caCerts or tls.caFile, not both");
  }
  if (tls.cert !== undefined && tls.certFile !== undefined) {
    throw bad("Give tls.cert or tls.certFile, not both");
  }
  if (tls.key !== undefined && tls.keyFile !== undefined) {
    throw bad("Give tls.key or tls.keyFile, not both");
  }
  const read = async (path: string, what: string, marker: RegExp, holds: string) => {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (cause) {
      const why = cause instanceof Error
        ? cause.message.replace(/ \(os error \d+\).*$/, "")
        : String(cause);
      throw bad(`Cannot read the TLS ${what} file ${path}: ${why}`, cause);
    }
    if (!marker.test(text)) throw bad(`The TLS ${what} file ${path} holds no PEM ${holds}`);
    return text;
  };
  const CERT = /-----BEGIN CERTIFICATE-----/;
  const KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;
  let caCerts: string[] = [];
  if (tls.caFile !== undefined) {
    caCerts = [await read(tls.caFile, "CA certificate", CERT, "certificate")];
  } else if (tls.caCerts !== undefined) {
    if (!Array.isArray(tls.caCerts)) throw bad("tls.caCerts must be an array of PEM strings");
    tls.caCerts.forEach((c, i) => {
      if (typeof c !== "string" || !CERT.test(c)) {
        throw bad(`tls.caCerts[${i}] is not a PEM certificate (for a path, use tls.caFile)`);
      }
    });
    caCerts = tls.caCerts;
  }
  const cert = tls.certFile !== undefined
    ? await read(tls.certFile, "client certificate", CERT, "certificate")
    : tls.cert;
  const key = tls.keyFile !== undefined
    ? await read(tls.keyFile, "client key", KEY, "private key")
    : tls.key;
  if (tls.cert !== undefined && (typeof cert !== "string" || !CERT.test(cert))) {
    throw bad("tls.cert is not a PEM certificate (for a path, use tls.certFile)");
  }
  if (tls.key !== undefined && (typeof key !== "string" || !KEY.test(key))) {
    throw bad("tls.key is not a PEM private key (for a path, use tls.keyFile)");
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw bad(
      cert === undefined
        ? "A client key was given without its certificate (tls.cert/certFile, --tls-cert FILE)"
        : "A client certificate was given without its key (tls.key/keyFile, --tls-key FILE)",
    );
  }
  return { caCerts, cert, key };
}

/** Turns what Deno/rustls threw into a {@link TlsError}; TCP errors, timeouts and aborts pass through. */
function tlsFailure(
  err: unknown,
  where: string,
  name: string,
  phase: "connect" | "handshake" | "greeting",
  gaveCert: boolean,
): unknown {
  if (err instanceof TimeoutError || err instanceof AbortError || err instanceof TlsError) {
    return err;
  }
  if (!(err instanceof Error)) return err;
  // rustls appends a link to its manual to some messages.
  const detail = err.message.replace(/:? ?https?:\/\/\S+/, "").replace(
    /^invalid peer certificate: /,
    "",
  );
  const fail = (kind: TlsFailure, message: string) =>
    new TlsError(message, { kind, address: where, cause: err });
  const closed = ["UnexpectedEof", "ConnectionReset", "BrokenPipe"].includes(err.name);
  const alert = /received fatal alert: (\w+)/.exec(err.message)?.[1];
  if (/UnknownIssuer|unknown issuer|BadSignature|UnknownCA/i.test(err.message) && !alert) {
    return fail(
      "untrusted",
      `The TLS certificate of ${where} is not signed by a CA given (${detail}): pass the CA ` +
        `that signed QEMU's server-cert.pem, the ca-cert.pem of its tls-creds-x509 dir, as ${CA_FLAG}`,
    );
  }
  if (/not valid for name|NotValidForName/i.test(err.message)) {
    return fail(
      "name-mismatch",
      `The TLS certificate of ${where} is not valid for ${JSON.stringify(name)} (${detail}): ` +
        `connect by a name it carries, or set tls.hostname (--tls-hostname NAME) to one`,
    );
  }
  if (/expired|not valid (before|yet)|NotValidYet/i.test(err.message) && !alert) {
    return fail(
      "expired",
      `The TLS certificate of ${where} is out of its validity period (${detail}): renew QEMU's ` +
        `server-cert.pem (QEMU reads it at start-up) or check this machine's clock`,
    );
  }
  if (/InvalidContentType|corrupt message|InvalidMessage/i.test(err.message)) {
    return fail(
      "not-tls",
      `${where} does not speak TLS (it sent plain data, as a monitor without tls-creds does): ` +
        `connect with tcp:HOST:PORT, or give the monitor tls-creds`,
    );
  }
  if (closed && phase !== "greeting") {
    return fail(
      "handshake",
      `${where} closed the connection during the TLS handshake: is it a TLS monitor ` +
        `(tls-creds=...)? Does it accept TLS 1.2 or 1.3? (${detail})`,
    );
  }
  if (alert === "CertificateRequired" || (closed && !gaveCert)) {
    return fail(
      "client-certificate-required",
      `${where} closed the TLS connection without a greeting: it wants a client certificate ` +
        `(verify-peer=on): pass tls.cert/key or certFile/keyFile (--tls-cert FILE --tls-key FILE)`,
    );
  }
  if (
    closed ||
    alert !== undefined &&
      /BadCertificate|UnknownCA|CertificateExpired|CertificateUnknown|AccessDenied|DecryptError/
        .test(alert)
  ) {
    return fail(
      "client-certificate-rejected",
      `${where} refused the client certificate${alert ? ` (${alert})` : ""}: it must be signed ` +
        `by the CA of QEMU's ca-cert.pem, be within its validity period and allow client ` +
        `auth (and be allowed by the monitor's tls-authz, if any)`,
    );
  }
  if (phase === "connect" && err.name !== "InvalidData" && !alert) {
    return err; // a TCP error (refused, unreachable, ...): the caller reports or retries it
  }
  return fail("handshake", `TLS with ${where} failed: ${detail}`);
}
