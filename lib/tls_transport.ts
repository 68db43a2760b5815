/**
 * The TLS transport: QMP over QEMU's own TLS (a socket chardev with
 * `tls-creds=` a `tls-creds-x509` object). Without a client certificate:
 * `Deno.connect` (cancellable, TCP_NODELAY) then `Deno.startTls`; with one, for
 * monitors that verify the peer (`verify-peer=on`): `node:tls` on a `node:net`
 * socket, because `Deno.startTls` presents no client certificate and the
 * connection of `Deno.connectTls` cannot set TCP_NODELAY.
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
   * host (e.g. connect to an IP, check `vm1.example`).
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
  if (creds.cert !== undefined) {
    // Deno.startTls presents no client certificate, and the TlsConn of Deno.connectTls has no
    // setNoDelay: node:tls on a node:net socket has both.
    return await openNodeTls(address, creds, name, options, where);
  }
  return await openDenoTls(address, creds, name, options, where);
}

/** The path without a client certificate: a cancellable TCP connect, then Deno.startTls. */
async function openDenoTls(
  address: TlsAddress,
  creds: Credentials,
  name: string | undefined,
  options: OpenOptions,
  where: string,
): Promise<Transport> {
  const checked = name ?? address.hostname;
  let conn: Deno.TlsConn | undefined;
  const step = <T>(what: string, pending: Promise<T>, late?: (value: T) => void) =>
    bounded(where, () => what, pending, options, () => conn?.close(), late);
  try {
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
    // Each write is two TLS records (see TlsTransport.write): with Nagle's algorithm the
    // 1-byte one waits for the ACK of the first, which QEMU delays (~40 ms per command).
    tcp.setNoDelay(true);
    conn = await step(
      "connect",
      Deno.startTls(tcp, { hostname: checked, caCerts: creds.caCerts }),
      (c) => c.close(),
    );
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
   * not per command, and nothing is sent that QEMU did not ask for. It needs
   * TCP_NODELAY: with Nagle's algorithm the 1-byte record would wait for the
   * ACK of the first, which QEMU's kernel delays by ~40 ms.
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

type Phase = "connect" | "handshake" | "greeting";

/**
 * The client-certificate path: node:tls on a node:net socket with TCP_NODELAY
 * (see the Deno path for why), same checks, same first-bytes wait.
 */
async function openNodeTls(
  address: TlsAddress,
  creds: Credentials,
  name: string | undefined,
  options: OpenOptions,
  where: string,
): Promise<Transport> {
  const [net, tls] = await Promise.all([import("node:net"), import("node:tls")]);
  let phase: Phase = "connect";
  const socket = net.connect({ host: address.hostname, port: address.port });
  socket.setNoDelay(true);
  // TLS on a connected socket: on one still connecting, Deno's node:tls starts its handshake
  // later, and crashes (uncaught) when the socket was destroyed meanwhile.
  try {
    await bounded(
      where,
      () => phase,
      new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      }),
      options,
      () => socket.destroy(),
    );
  } catch (err) {
    socket.destroy();
    throw tlsFailure(nodeError(err), where, name ?? address.hostname, phase, true);
  }
  socket.removeAllListeners("error");
  phase = "handshake";
  const secure = tls.connect({
    socket,
    host: address.hostname,
    // node:tls checks an IP address given as `host`; `servername` must be a DNS name.
    ...(name !== undefined || net.isIP(address.hostname) === 0
      ? { servername: name ?? address.hostname }
      : {}),
    ca: creds.caCerts.length > 0 ? creds.caCerts : undefined,
    cert: creds.cert,
    key: creds.key,
  });
  secure.once("secureConnect", () => (phase = "greeting"));
  const transport = new NodeTlsTransport(secure, socket);
  try {
    await bounded(where, () => phase, transport.firstData(), options, () => transport.close());
    return transport;
  } catch (err) {
    transport.close();
    const failure = tlsFailure(nodeError(err), where, name ?? address.hostname, phase, true);
    if (failure instanceof TlsError && failure.kind === "untrusted") {
      // Deno's node:tls reports every failed check of the server's certificate as
      // UNABLE_TO_VERIFY_LEAF_SIGNATURE: let rustls say which (expired, wrong name, ...).
      throw await diagnose(address, creds, name, options, where) ?? failure;
    }
    throw failure;
  }
}

/**
 * Checks the server's certificate again on the Deno path (no client
 * certificate), for a precise reason; `undefined` when that says nothing more.
 */
async function diagnose(
  address: TlsAddress,
  creds: Credentials,
  name: string | undefined,
  options: OpenOptions,
  where: string,
): Promise<TlsError | undefined> {
  if (options.deadline - Date.now() < 50) return undefined;
  try {
    const probe = await openDenoTls(address, { caCerts: creds.caCerts }, name, options, where);
    probe.close();
  } catch (err) {
    if (
      err instanceof TlsError && ["untrusted", "name-mismatch", "expired"].includes(err.kind)
    ) {
      return err;
    }
  }
  return undefined;
}

/** Node's errors for what Deno's are named: the retry and the checks go by name. */
function nodeError(err: unknown): unknown {
  const code = (err as { code?: unknown })?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case "ECONNREFUSED":
      return new Deno.errors.ConnectionRefused(message, { cause: err });
    case "ECONNRESET":
      return new Deno.errors.ConnectionReset(message, { cause: err });
    case "EPIPE":
      return new Deno.errors.BrokenPipe(message, { cause: err });
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return new Deno.errors.InvalidData(`UnknownIssuer: ${message}`, { cause: err });
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return new Deno.errors.InvalidData(`certificate not valid for name: ${message}`, {
        cause: err,
      });
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return new Deno.errors.InvalidData(`certificate expired: ${message}`, { cause: err });
  }
  return err;
}

/** A node:tls socket as a {@link Transport}, with the same write rule as {@link TlsTransport}. */
class NodeTlsTransport implements Transport {
  #secure: import("node:tls").TLSSocket;
  #raw: import("node:net").Socket;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;

  constructor(secure: import("node:tls").TLSSocket, raw: import("node:net").Socket) {
    this.#secure = secure;
    this.#raw = raw;
    const wake = () => {
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    };
    secure.on("data", (b: Uint8Array) => {
      this.#chunks.push(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
      this.#queued += b.byteLength;
      if (this.#queued > READ_HIGH_WATER) secure.pause();
      wake();
    });
    const end = () => {
      this.#ended = true;
      wake();
    };
    secure.on("end", end);
    secure.on("close", end);
    secure.on("error", (e: unknown) => {
      this.#error ??= e;
      wake();
    });
    raw.on("error", (e: unknown) => {
      this.#error ??= e;
      wake();
    });
  }

  /** Resolves once bytes arrived; rejects when the connection failed or ended first. */
  async firstData(): Promise<void> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) throw new Deno.errors.UnexpectedEof("closed before any data");
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) {
        const e = nodeError(this.#error);
        // As on the Deno path: an end without close_notify is an end.
        if (e instanceof Deno.errors.ConnectionReset && this.#ended) return null;
        throw e;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const head = this.#chunks[0];
    const n = Math.min(p.length, head.length);
    p.set(head.subarray(0, n));
    if (n < head.length) this.#chunks[0] = head.subarray(n);
    else this.#chunks.shift();
    this.#queued -= n;
    if (this.#queued <= READ_HIGH_WATER / 2 && this.#secure.isPaused()) this.#secure.resume();
    return n;
  }

  /** Writes all of `p`, its last byte in a TLS record of its own (see {@link TlsTransport.write}). */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    // One after the other: node would join writes queued together into one record.
    if (p.length > 1) await this.#write(p.subarray(0, p.length - 1));
    await this.#write(p.subarray(p.length - 1));
    return p.length;
  }

  #write(chunk: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#error !== undefined) return reject(nodeError(this.#error));
      this.#secure.write(chunk, (err?: Error | null) => err ? reject(nodeError(err)) : resolve());
    });
  }

  close(): void {
    this.#ended = true;
    this.#secure.destroy();
    this.#raw.destroy();
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }
}

/** Bytes queued from a node:tls socket before it is paused. */
const READ_HIGH_WATER = 1024 * 1024;

/** Awaits one step of the connection within the deadline; `late` disposes of a value that comes too late. */
async function bounded<T>(
  where: string,
  phase: () => string,
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
    const what = phase();
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
  phase: Phase,
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
