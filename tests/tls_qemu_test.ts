/**
 * QMP over TLS against a real QEMU 7.2 (`tls-creds-x509` on a socket chardev),
 * with certificates made by `openssl` for each test: success (commands,
 * events, many in flight, a 1 MB command, the oob window), and each failure
 * as a clear TlsError or TimeoutError, never a hang.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { ProtocolError, QmpError, TimeoutError, TlsError, type TlsFailure } from "../lib/errors.ts";
import { launch } from "../lib/machine.ts";
import { LOCAL_SAN, makePki } from "./helpers/tls_pki.ts";
import { startQemu } from "./helpers/qemu.ts";

const T = { sanitizeOps: true, sanitizeResources: true };

async function rejects(p: Promise<unknown>, kind: TlsFailure, re: RegExp): Promise<TlsError> {
  let caught: unknown;
  try {
    const c = await p;
    await (c as { close?: () => Promise<void> })?.close?.();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof TlsError, `expected TlsError(${kind}), got ${caught}`);
  assert.equal(caught.kind, kind, caught.message);
  assert.match(caught.message, re);
  assert.doesNotMatch(caught.message, /\n|PRIVATE KEY|https?:\/\//, "one line, no key, no URL");
  return caught;
}

Deno.test({
  name: "tls: commands, events, 200 in flight and a 1 MB command over QEMU's TLS monitor",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    await using vm = await launch({ tls: { dir }, timeout: "30s" });
    assert.match(vm.tlsAddress ?? "", /^tls:\/\/127\.0\.0\.1:\d+$/);
    await using qmp = await connect(vm.tlsAddress!, {
      tls: { caFile: pki.caFile },
      timeout: "10s",
    });
    assert.equal(qmp.address, vm.tlsAddress);
    assert.equal(qmp.greeting.version.qemu.major, 7);
    assert.ok(qmp.negotiated);
    const { status } = await qmp.execute("query-status", undefined, { timeout: "5s" });
    assert.equal(typeof status, "string");

    // Events: armed before the action, as over a unix socket.
    const stopped = qmp.waitEvent("STOP", { timeout: "5s" });
    await qmp.execute("stop", undefined, { timeout: "5s" });
    await stopped;
    const resumed = qmp.waitEvent("RESUME", { timeout: "5s" });
    await qmp.execute("cont", undefined, { timeout: "5s" });
    await resumed;

    // Sequential round trips are not held by Nagle + delayed ACK (~40 ms each).
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) await qmp.execute("query-status", undefined, { timeout: "5s" });
    const ms = (performance.now() - t0) / 50;
    assert.ok(ms < 20, `${ms.toFixed(1)} ms per round trip`);

    // 200 commands in flight: the client writes its queue in one go.
    const many = await Promise.all(
      Array.from({ length: 200 }, () => qmp.execute("query-status", undefined, { timeout: "20s" })),
    );
    assert.equal(many.length, 200);

    // A 1 MB command (many 16 KiB records), then a small one after it.
    const data = "x".repeat(1024 * 1024);
    await qmp.execute("object-add", { "qom-type": "secret", id: "big0", data, format: "raw" }, {
      timeout: "20s",
    });
    await qmp.execute("object-del", { id: "big0" }, { timeout: "5s" });
    // And one QEMU refuses: the error comes back, the connection lives on.
    await assert.rejects(
      qmp.executeRaw("query-status", { junk: data.slice(0, 100_000) }, { timeout: "20s" }),
      /junk/,
    );
    await qmp.execute("query-status", undefined, { timeout: "5s" });
  },
});

Deno.test({
  name: "tls: the oob window (8 in-band in flight) with exec-oob, and 1 MB, on both TLS paths",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    const client = await pki.leaf("client", { usage: "client" });
    await using vm = await launch({ tls: { dir }, timeout: "30s" });
    // Both paths: Deno.startTls (no client certificate) and node:tls (with one).
    for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
      await using qmp = await connect(vm.tlsAddress!, {
        tls: { caFile: pki.caFile, ...extra },
        oob: true,
        timeout: "10s",
      });
      assert.ok(qmp.oob);
      const inband = Array.from(
        { length: 200 },
        () => qmp.execute("query-status", undefined, { timeout: "20s" }),
      );
      const oob = Array.from(
        { length: 20 },
        () => qmp.executeOob("query-yank", undefined, { timeout: "20s" }),
      );
      const [a, b] = await Promise.all([Promise.all(inband), Promise.all(oob)]);
      assert.equal(a.length, 200);
      assert.equal(b.length, 20);
      // A 1 MB command amid others.
      const data = "y".repeat(1024 * 1024);
      await Promise.all([
        qmp.execute("query-status", undefined, { timeout: "20s" }),
        qmp.execute("object-add", { "qom-type": "secret", id: "big1", data, format: "raw" }, {
          timeout: "20s",
        }),
        qmp.execute("query-status", undefined, { timeout: "20s" }),
      ]);
      await qmp.execute("object-del", { id: "big1" }, { timeout: "5s" });
      await qmp.close();
      await new Promise((r) => setTimeout(r, 200)); // QMP serves one client at a time
    }
  },
});

Deno.test({
  name: "tls: QEMU 7.2 does not answer a command sent as one lone TLS record (why writes split)",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    await using vm = await launch({ tls: { dir }, timeout: "30s" });
    const port = Number(vm.tlsAddress!.split(":").pop());
    const caCerts = [await Deno.readTextFile(pki.caFile)];
    const enc = new TextEncoder();
    const msg = enc.encode('{"execute":"qmp_capabilities"}');
    const answered = async (split: boolean) => {
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts });
      try {
        const buf = new Uint8Array(4096);
        await conn.read(buf); // greeting
        if (split) {
          await conn.write(msg.subarray(0, msg.length - 1));
          await conn.write(msg.subarray(msg.length - 1));
        } else {
          await conn.write(msg);
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const reply = await Promise.race([
          conn.read(buf).then((n) => n !== null),
          new Promise<false>((r) => (timer = setTimeout(() => r(false), 1500))),
        ]);
        clearTimeout(timer);
        return reply;
      } finally {
        conn.close();
      }
    };
    assert.equal(await answered(false), false, "QEMU answered a lone record: quirk gone?");
    // QMP serves one client at a time; the next connection is served once QEMU saw the close.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await answered(true), true);
  },
});

Deno.test({
  name: "tls: wrong CA, no CA, wrong name, and tls.hostname",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "vm1",
      await pki.leaf("vm1", {
        usage: "server",
        san: ["DNS:vm1.example"],
      }),
    );
    await using vm = await launch({ tls: { dir }, timeout: "30s" });
    const at = vm.tlsAddress!;
    const client = await pki.leaf("client", { usage: "client" });
    // Both paths: Deno.startTls (no client certificate) and node:tls (with one).
    for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
      const t0 = Date.now();
      await rejects(
        connect(at, { tls: { caFile: pki.otherCaFile, ...extra }, timeout: "5s" }),
        "untrusted",
        /is not signed by a CA given .*--tls-ca FILE/,
      );
      await rejects(connect(at, { tls: { ...extra }, timeout: "5s" }), "untrusted", /ca-cert\.pem/);
      await rejects(
        connect(at, { tls: { caFile: pki.caFile, ...extra }, timeout: "5s" }),
        "name-mismatch",
        /not valid for "127\.0\.0\.1" .*--tls-hostname NAME/,
      );
      assert.ok(Date.now() - t0 < 5000, "failures are immediate, not timeouts");
      // The name the certificate carries, checked while connecting to the IP.
      await using qmp = await connect(at, {
        tls: { caFile: pki.caFile, hostname: "vm1.example", ...extra },
        timeout: "5s",
      });
      await qmp.execute("query-status", undefined, { timeout: "5s" });
      await qmp.close();
      await rejects(
        connect(at, {
          tls: { caFile: pki.caFile, hostname: "vm2.example", ...extra },
          timeout: "5s",
        }),
        "name-mismatch",
        /not valid for "vm2\.example"/,
      );
    }
  },
});

Deno.test({
  name: "tls: verify-peer=on: client certificate required, accepted, or refused",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    const client = await pki.leaf("client", { usage: "client" });
    const expired = await pki.leaf("expired", {
      usage: "client",
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2020-01-02T00:00:00Z"),
    });
    const stranger = await pki.leaf("stranger", { usage: "client", ca: "other" });
    await using vm = await launch({ tls: { dir, verifyPeer: true }, timeout: "30s" });
    const at = vm.tlsAddress!;
    const caFile = pki.caFile;
    const pause = () => new Promise((r) => setTimeout(r, 100));
    await rejects(
      connect(at, { tls: { caFile }, timeout: "5s" }),
      "client-certificate-required",
      /wants a client certificate \(verify-peer=on\).*--tls-cert FILE --tls-key FILE/,
    );
    await pause();
    await rejects(
      connect(at, { tls: { caFile, certFile: expired.cert, keyFile: expired.key }, timeout: "5s" }),
      "client-certificate-rejected",
      /refused the client certificate/,
    );
    await pause();
    await rejects(
      connect(at, {
        tls: { caFile, certFile: stranger.cert, keyFile: stranger.key },
        timeout: "5s",
      }),
      "client-certificate-rejected",
      /refused the client certificate/,
    );
    await pause();
    // PEM contents work as well as paths.
    const cert = await Deno.readTextFile(client.cert);
    const key = await Deno.readTextFile(client.key);
    await using qmp = await connect(at, { tls: { caFile, cert, key }, timeout: "5s" });
    await qmp.execute("query-status", undefined, { timeout: "5s" });
    await qmp.close();
    // With a client certificate (the node:tls path), another name can be checked too.
    await using named = await connect(at, {
      tls: { caFile, cert, key, hostname: "localhost" },
      timeout: "5s",
    });
    await named.execute("query-status", undefined, { timeout: "5s" });
    await named.close();
    await pause();
    // Sequential round trips are not held by Nagle + delayed ACK (~40 ms each).
    await using fast = await connect(at, { tls: { caFile, cert, key }, timeout: "5s" });
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) await fast.execute("query-status", undefined, { timeout: "5s" });
    const ms = (performance.now() - t0) / 50;
    assert.ok(ms < 20, `${ms.toFixed(1)} ms per round trip with a client certificate`);
  },
});

Deno.test({
  name: "tls: an expired server certificate (QEMU started just before it expired)",
  ...T,
  async fn() {
    await using pki = await makePki();
    // QEMU refuses an expired certificate at start-up, not later: let it expire while running.
    const notAfter = new Date(Math.ceil((Date.now() + 4000) / 1000) * 1000);
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
        notAfter,
      }),
    );
    const client = await pki.leaf("client", { usage: "client" });
    await using vm = await launch({ tls: { dir }, timeout: "3s" });
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter.getTime() - Date.now() + 1200)));
    for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
      await rejects(
        connect(vm.tlsAddress!, { tls: { caFile: pki.caFile, ...extra }, timeout: "5s" }),
        "expired",
        /is out of its validity period \(certificate expired.*renew QEMU's server-cert\.pem/,
      );
    }
  },
});

Deno.test({
  name: "tls: a plain client at a TLS monitor times out saying tls://; TLS at a plain one fails",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    await using vm = await launch({ tls: { dir }, timeout: "30s" });
    const tcp = vm.tlsAddress!.replace("tls://", "tcp:");
    const t0 = Date.now();
    await assert.rejects(connect(tcp, { timeout: "1s" }), (e: unknown) => {
      assert.ok(e instanceof TimeoutError, String(e));
      assert.match(e.message, /within 1s.*use tls:\/\//);
      return true;
    });
    assert.ok(Date.now() - t0 < 3000);

    await using plain = await startQemu({ machine: "none", tcp: true });
    const tls = plain.address.replace("tcp:", "tls://");
    const client = await pki.leaf("client", { usage: "client" });
    for (const extra of [{}, { certFile: client.cert, keyFile: client.key }]) {
      await rejects(
        connect(tls, { tls: { caFile: pki.caFile, ...extra }, timeout: "5s" }),
        "not-tls",
        /does not speak TLS .*connect with tcp:HOST:PORT/,
      );
      await new Promise((r) => setTimeout(r, 200)); // QMP serves one client at a time
    }
  },
});

Deno.test({
  name: "tls: launch() refuses a credentials dir without dh-params.pem, before starting QEMU",
  ...T,
  async fn() {
    await using pki = await makePki();
    const dir = await pki.serverDir(
      "s",
      await pki.leaf("server", {
        usage: "server",
        san: LOCAL_SAN,
      }),
    );
    await Deno.remove(`${dir}/dh-params.pem`);
    await assert.rejects(launch({ tls: { dir } }), (e: unknown) => {
      assert.ok(e instanceof QmpError);
      assert.match(e.message, /has no dh-params\.pem .*group:ffdhe2048/);
      return true;
    });
  },
});

Deno.test({
  name: "tls: a remote that closes mid-greeting is a clear one-line error",
  ...T,
  async fn() {
    await using pki = await makePki();
    const leaf = await pki.leaf("server", { usage: "server", san: LOCAL_SAN });
    const listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(leaf.cert),
      key: await Deno.readTextFile(leaf.key),
    });
    const served = (async () => {
      const conn = await listener.accept();
      try {
        await conn.write(new TextEncoder().encode('{"QMP": {"version": {"qemu"'));
      } finally {
        conn.close();
      }
    })();
    try {
      const port = (listener.addr as Deno.NetAddr).port;
      await assert.rejects(
        connect(`tls://127.0.0.1:${port}`, { tls: { caFile: pki.caFile }, timeout: "5s" }),
        (e: unknown) => {
          // As over a unix socket: the framer saw a message cut short.
          assert.ok(e instanceof ProtocolError, String(e));
          assert.match(e.message, /^Connection ended in the middle of a message .*cut$/);
          assert.doesNotMatch(e.message, /\n|https?:\/\//);
          return true;
        },
      );
    } finally {
      listener.close();
      await served;
    }
  },
});
