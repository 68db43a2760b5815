/**
 * Test helper: a throwaway X.509 PKI made with `openssl` in a private temp
 * dir, for QEMU's `tls-creds-x509` and qmpkit's `tls://` client. EC P-256
 * keys (fast), certificates signed with `openssl ca` so that any validity
 * window can be chosen (an expired certificate included).
 *
 * @module
 */

/** Options of one leaf certificate. */
export interface LeafOptions {
  /** Signing CA: `"ca"` (the trusted one) or `"other"` (a stranger CA). Default `"ca"`. */
  ca?: "ca" | "other";
  /** `serverAuth` or `clientAuth`. */
  usage: "server" | "client";
  /** subjectAltName entries, e.g. `["IP:127.0.0.1", "DNS:localhost"]`. */
  san?: string[];
  /** Validity start (default: one hour ago). */
  notBefore?: Date;
  /** Validity end (default: in one day). */
  notAfter?: Date;
}

/** A generated PKI; dispose it to remove its files. */
export interface TestPki extends AsyncDisposable {
  /** The temp dir holding everything. */
  dir: string;
  /** Path of the trusted CA certificate. */
  caFile: string;
  /** Path of a CA certificate that signed nothing QEMU serves. */
  otherCaFile: string;
  /** Path of the DH parameters (ffdhe2048). */
  dhFile: string;
  /** Makes a leaf certificate and key; returns their paths. */
  leaf(name: string, options: LeafOptions): Promise<{ cert: string; key: string }>;
  /**
   * Makes a QEMU `tls-creds-x509` server directory (ca-cert.pem, server-cert.pem,
   * server-key.pem, dh-params.pem) from a leaf made by {@link leaf}.
   */
  serverDir(name: string, leaf: { cert: string; key: string }): Promise<string>;
}

/** Runs openssl with a time bound; throws with its stderr when it fails. */
async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** openssl ca's date format: YYYYMMDDHHMMSSZ. */
function asn1Time(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Creates a PKI: a trusted CA, a stranger CA and DH parameters. */
export async function makePki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-pki-" });
  await Deno.chmod(dir, 0o700);
  const key = (name: string) =>
    openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      `${name}-key.pem`,
    ], dir);
  const makeCa = async (name: string) => {
    await key(name);
    await openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      `${name}-key.pem`,
      "-subj",
      `/CN=qmpkit test ${name}`,
      "-days",
      "2",
      "-out",
      `${name}-cert.pem`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ], dir);
  };
  try {
    await makeCa("ca");
    await makeCa("other");
    await openssl([
      "genpkey",
      "-genparam",
      "-algorithm",
      "DH",
      "-pkeyopt",
      "group:ffdhe2048",
      "-out",
      "dh-params.pem",
    ], dir);
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
  let serial = 0;
  const pki: TestPki = {
    dir,
    caFile: `${dir}/ca-cert.pem`,
    otherCaFile: `${dir}/other-cert.pem`,
    dhFile: `${dir}/dh-params.pem`,
    async leaf(name, options) {
      const ca = options.ca ?? "ca";
      const db = `${dir}/db-${name}`;
      await Deno.mkdir(db);
      await Deno.writeTextFile(`${db}/index.txt`, "");
      await Deno.writeTextFile(`${db}/serial`, `${(0x1000 + ++serial).toString(16)}\n`);
      await Deno.writeTextFile(
        `${dir}/${name}.cnf`,
        [
          "[ca]",
          "default_ca=c",
          "[c]",
          `database=${db}/index.txt`,
          `new_certs_dir=${db}`,
          `serial=${db}/serial`,
          "default_md=sha256",
          "policy=p",
          "copy_extensions=none",
          "[p]",
          "commonName=supplied",
        ].join("\n") + "\n",
      );
      await Deno.writeTextFile(
        `${dir}/${name}.ext`,
        [
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=digitalSignature,keyEncipherment",
          `extendedKeyUsage=${options.usage === "server" ? "serverAuth" : "clientAuth"}`,
          ...(options.san?.length ? [`subjectAltName=${options.san.join(",")}`] : []),
        ].join("\n") + "\n",
      );
      await key(name);
      await openssl([
        "req",
        "-new",
        "-key",
        `${name}-key.pem`,
        "-subj",
        `/CN=${name}`,
        "-out",
        `${name}.csr`,
      ], dir);
      const notBefore = options.notBefore ?? new Date(Date.now() - 3600_000);
      const notAfter = options.notAfter ?? new Date(Date.now() + 86400_000);
      await openssl([
        "ca",
        "-config",
        `${name}.cnf`,
        "-batch",
        "-notext",
        "-in",
        `${name}.csr`,
        "-out",
        `${name}-cert.pem`,
        "-cert",
        `${ca}-cert.pem`,
        "-keyfile",
        `${ca}-key.pem`,
        "-startdate",
        asn1Time(notBefore),
        "-enddate",
        asn1Time(notAfter),
        "-extfile",
        `${name}.ext`,
      ], dir);
      return { cert: `${dir}/${name}-cert.pem`, key: `${dir}/${name}-key.pem` };
    },
    async serverDir(name, leaf) {
      const d = `${dir}/qemu-${name}`;
      await Deno.mkdir(d);
      await Deno.copyFile(`${dir}/ca-cert.pem`, `${d}/ca-cert.pem`);
      await Deno.copyFile(`${dir}/dh-params.pem`, `${d}/dh-params.pem`);
      await Deno.copyFile(leaf.cert, `${d}/server-cert.pem`);
      await Deno.copyFile(leaf.key, `${d}/server-key.pem`);
      return d;
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return pki;
}

/** The usual server certificate: valid for 127.0.0.1, ::1 and localhost. */
export const LOCAL_SAN = ["IP:127.0.0.1", "IP:::1", "DNS:localhost"];
