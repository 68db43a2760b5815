import assert from "node:assert/strict";
import { formatAddress, isLoopback, parseAddress } from "../lib/address.ts";
import { formatDuration, parseDuration } from "../lib/duration.ts";
import { AddressError } from "../lib/errors.ts";

Deno.test("address: accepted forms", () => {
  assert.deepEqual(parseAddress("unix:/run/vm1/qmp.sock"), {
    transport: "unix",
    path: "/run/vm1/qmp.sock",
  });
  assert.deepEqual(parseAddress("/tmp/q.sock"), { transport: "unix", path: "/tmp/q.sock" });
  assert.deepEqual(parseAddress("./q.sock"), { transport: "unix", path: "./q.sock" });
  assert.deepEqual(parseAddress("tcp:127.0.0.1:4444"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 4444,
  });
  assert.deepEqual(parseAddress("localhost:4444"), {
    transport: "tcp",
    hostname: "localhost",
    port: 4444,
  });
  assert.deepEqual(parseAddress("[::1]:4444"), { transport: "tcp", hostname: "::1", port: 4444 });
  assert.deepEqual(parseAddress("tcp:[::1]:1"), { transport: "tcp", hostname: "::1", port: 1 });
  assert.deepEqual(parseAddress({ transport: "tcp", hostname: "h", port: 5 }), {
    transport: "tcp",
    hostname: "h",
    port: 5,
  });
});

Deno.test("address: bad input is an AddressError saying what is wrong", () => {
  const cases: [unknown, RegExp][] = [
    ["", /empty/],
    ["unix:", /path is empty/],
    ["tcp:host", /missing ':PORT'/],
    ["host:0", /1 to 65535/],
    ["host:65536", /1 to 65535/],
    ["host:12ab", /1 to 65535/],
    [":4444", /host is empty/],
    ["::1:4444", /brackets/],
    ["[::1:4444", /missing '\]'/],
    ["[::1]4444", /missing ':PORT' after/],
    [{ transport: "udp" }, /transport must be/],
    [{ transport: "unix", path: "" }, /non-empty path/],
    [42, /string or an object/],
  ];
  for (const [input, re] of cases) {
    assert.throws(() => parseAddress(input as string), (e: unknown) => {
      assert.ok(e instanceof AddressError, String(input));
      assert.match(e.message, re);
      assert.match(e.message, /unix:\/path\/to\/qmp\.sock/);
      return true;
    });
  }
});

Deno.test("address: canonical form and loopback detection", () => {
  assert.equal(formatAddress(parseAddress("[::1]:5")), "tcp:[::1]:5");
  assert.equal(formatAddress(parseAddress("/x")), "unix:/x");
  assert.equal(isLoopback(parseAddress("127.0.0.1:1")), true);
  assert.equal(isLoopback(parseAddress("localhost:1")), true);
  assert.equal(isLoopback(parseAddress("10.0.0.1:1")), false);
});

Deno.test("duration: parse and format", () => {
  assert.equal(parseDuration(250), 250);
  assert.equal(parseDuration("250"), 250);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("5s"), 5000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("2m"), 120000);
  assert.equal(parseDuration("1m30s"), 90000);
  assert.equal(parseDuration("1h"), 3600000);
  for (const bad of ["", "5 seconds", "-1s", "s", "1x", -5, NaN, "600h", 2 ** 31]) {
    assert.throws(() => parseDuration(bad as string), RangeError, String(bad));
  }
  assert.equal(formatDuration(850), "850ms");
  assert.equal(formatDuration(1250), "1.25s");
  assert.equal(formatDuration(125000), "2m05s");
});

Deno.test("address: tls://HOST:PORT", () => {
  assert.deepEqual(parseAddress("tls://127.0.0.1:4444"), {
    transport: "tls",
    hostname: "127.0.0.1",
    port: 4444,
  });
  assert.deepEqual(parseAddress("tls://[::1]:4444"), {
    transport: "tls",
    hostname: "::1",
    port: 4444,
  });
  assert.deepEqual(parseAddress("TLS://vm1.example:1"), {
    transport: "tls",
    hostname: "vm1.example",
    port: 1,
  });
  assert.deepEqual(parseAddress({ transport: "tls", hostname: "h", port: 5 }), {
    transport: "tls",
    hostname: "h",
    port: 5,
  });
  assert.equal(formatAddress(parseAddress("tls://[::1]:5")), "tls://[::1]:5");
  assert.equal(formatAddress(parseAddress("tls://localhost:5")), "tls://localhost:5");
  assert.equal(isLoopback(parseAddress("tls://127.0.0.1:5")), true);
  assert.equal(isLoopback(parseAddress("tls://vm1.example:5")), false);
});

Deno.test("address: a bad scheme or a bad tls:// address is an AddressError", () => {
  const cases: [string, RegExp][] = [
    // Before, these were taken for unix socket paths (they contain "/").
    ["ftp://host:21", /unknown scheme "ftp:\/\/" \(known: tls:\/\/, ssh:\/\/\)/],
    ["https://host:443/x", /unknown scheme "https:\/\/"/],
    ["tls://host", /missing ':PORT'/],
    ["tls://:4444", /host is empty/],
    ["tls://host:0", /1 to 65535/],
    ["tls://", /missing ':PORT'|host is empty/],
    ["tls://host:4444/qmp", /takes no path/],
    ["tls:host:4444", /tls:\/\/HOST:PORT/],
  ];
  for (const [input, re] of cases) {
    assert.throws(() => parseAddress(input), (e: unknown) => {
      assert.ok(e instanceof AddressError, input);
      assert.match(e.message, re, input);
      assert.match(e.message, /tls:\/\/HOST:PORT/, input);
      return true;
    });
  }
});
