/**
 * Bad input for `tls://` without QEMU: unreadable or non-PEM credentials
 * (named by path, contents never printed), TLS options on a non-TLS address,
 * and local remotes that close mid-handshake, never answer it, or never
 * accept: each a clear one-line error within its timeout.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { AddressError, TimeoutError, TlsError } from "../lib/errors.ts";
import { makePki } from "./helpers/tls_pki.ts";
import type { TlsOptions } from "../lib/tls_transport.ts";

const T = { sanitizeOps: true, sanitizeResources: true };

function oneLine(e: Error): void {
  assert.doesNotMatch(e.message, /\n|BEGIN|PRIVATE KEY-----|https?:\/\//, e.message);
}

Deno.test({
  name: "tls bad input: credentials are checked before any I/O and named by path only",
  ...T,
  async fn() {
    await using pki = await makePki();
    const leaf = await pki.leaf("client", { usage: "client" });
    const keyPem = await Deno.readTextFile(leaf.key);
    // Nothing listens on port 1: a credentials error must come first.
    const at = "tls://127.0.0.1:1";
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { caFile: `${pki.dir}/missing-ca.pem` },
        /^Cannot read the TLS CA certificate file .*missing-ca\.pem: No such file/,
      ],
      [{ caFile: leaf.key }, /^The TLS CA certificate file .*client-key\.pem holds no PEM cert/],
      [
        { caFile: pki.caFile, certFile: leaf.cert, keyFile: pki.dir },
        /^Cannot read the TLS client key file .*qmpkit-pki-\w+: /,
      ],
      [{ caFile: pki.caFile, certFile: leaf.cert }, /without its key .*--tls-key FILE/],
      [{ caFile: pki.caFile, keyFile: leaf.key }, /without its certificate .*--tls-cert FILE/],
      [{ cert: keyPem, key: keyPem }, /^tls\.cert is not a PEM certificate \(for a path/],
      [{ caCerts: [pki.caFile] }, /^tls\.caCerts\[0\] is not a PEM certificate/],
      [{ caFile: pki.caFile, caCerts: [] }, /not both/],
    ];
    for (const [tls, re] of cases) {
      const t0 = Date.now();
      await assert.rejects(connect(at, { tls, timeout: "2s" }), (e: unknown) => {
        assert.ok(e instanceof TlsError, `${JSON.stringify(tls)}: ${e}`);
        assert.equal(e.kind, "credentials");
        assert.match(e.message, re);
        oneLine(e);
        return true;
      });
      assert.ok(Date.now() - t0 < 1000);
    }
    await assert.rejects(
      connect("tcp:127.0.0.1:1", { tls: { caFile: pki.caFile } }),
      (e: unknown) => e instanceof AddressError && /not tls:\/\//.test(e.message),
    );
  },
});

Deno.test({
  name: "tls bad input: a remote that closes during the handshake",
  ...T,
  async fn() {
    await using pki = await makePki();
    const client = await pki.leaf("client", { usage: "client" });
    for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
      await closesMidHandshake(pki.caFile, extra);
    }
  },
});

async function closesMidHandshake(caFile: string, extra: TlsOptions): Promise<void> {
  {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      await conn.read(new Uint8Array(4096)); // the ClientHello
      conn.close();
    })();
    try {
      const port = (listener.addr as Deno.NetAddr).port;
      await assert.rejects(
        connect(`tls://127.0.0.1:${port}`, { tls: { caFile, ...extra }, timeout: "5s" }),
        (e: unknown) => {
          assert.ok(e instanceof TlsError, String(e));
          assert.equal(e.kind, "handshake");
          assert.match(e.message, /closed the connection during the TLS handshake/);
          oneLine(e);
          return true;
        },
      );
    } finally {
      listener.close();
      await served;
    }
  }
}

Deno.test({
  name: "tls bad input: a handshake nobody answers times out within the connect timeout",
  ...T,
  async fn() {
    await using pki = await makePki();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let held: Deno.Conn | undefined;
    const served = listener.accept().then((c) => (held = c));
    try {
      const port = (listener.addr as Deno.NetAddr).port;
      const t0 = Date.now();
      await assert.rejects(
        connect(`tls://127.0.0.1:${port}`, { tls: { caFile: pki.caFile }, timeout: "500ms" }),
        (e: unknown) => {
          assert.ok(e instanceof TimeoutError, String(e));
          assert.match(e.message, /within 500ms; the TLS handshake was not answered/);
          oneLine(e);
          return true;
        },
      );
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await served;
      held?.close();
      listener.close();
    }
  },
});

Deno.test({
  name: "tls bad input: a connection that never completes (full accept queue) times out",
  ...T,
  async fn() {
    await using pki = await makePki();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, tcpBacklog: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    // Fill the accept queue: further SYNs are dropped and their connect hangs.
    const fillers: Deno.Conn[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const c = await Deno.connect({
          hostname: "127.0.0.1",
          port,
          signal: AbortSignal.timeout(200),
        }).catch(() => undefined);
        if (c === undefined) break;
        fillers.push(c);
      }
      assert.ok(fillers.length < 8, "the accept queue never filled");
      const client = await pki.leaf("client", { usage: "client" });
      for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
        const t0 = Date.now();
        await assert.rejects(
          connect(`tls://127.0.0.1:${port}`, {
            tls: { caFile: pki.caFile, ...extra },
            timeout: "500ms",
          }),
          (e: unknown) => {
            assert.ok(e instanceof TimeoutError, String(e));
            assert.match(e.message, /within 500ms; no TCP connection/);
            oneLine(e);
            return true;
          },
        );
        assert.ok(Date.now() - t0 < 2000);
      }
    } finally {
      listener.close();
      for (const c of fillers) c.close();
    }
  },
});
