import assert from "node:assert/strict";
import { formatAddress, isLoopback, parseAddress } from "../lib/address.ts";
import { AddressError } from "../lib/errors.ts";

Deno.test("ssh address: accepted forms", () => {
  assert.deepEqual(parseAddress("ssh://host/run/vm1/qmp.sock"), {
    transport: "ssh",
    hostname: "host",
    path: "/run/vm1/qmp.sock",
  });
  assert.deepEqual(parseAddress("ssh://alice@vm-host.example:2222/run/vm1/qmp.sock"), {
    transport: "ssh",
    user: "alice",
    hostname: "vm-host.example",
    port: 2222,
    path: "/run/vm1/qmp.sock",
  });
  assert.deepEqual(parseAddress("ssh://root@[::1]:22/q.sock"), {
    transport: "ssh",
    user: "root",
    hostname: "::1",
    port: 22,
    path: "/q.sock",
  });
  // An ssh_config Host alias is a host like any other.
  assert.deepEqual(parseAddress(" ssh://vm1/x/y "), {
    transport: "ssh",
    hostname: "vm1",
    path: "/x/y",
  });
  assert.deepEqual(
    parseAddress({ transport: "ssh", hostname: "h", path: "/s", user: "u", port: 7 }),
    { transport: "ssh", hostname: "h", path: "/s", user: "u", port: 7 },
  );
});

Deno.test("ssh address: canonical form round-trips; an ssh tunnel is not plain network QMP", () => {
  for (
    const s of [
      "ssh://host/run/vm1/qmp.sock",
      "ssh://alice@host:2222/q.sock",
      "ssh://[::1]:22/q.sock",
      "ssh://u@[fe80::1]/a/b",
    ]
  ) {
    assert.equal(formatAddress(parseAddress(s)), s);
  }
  assert.equal(isLoopback(parseAddress("ssh://far.example/q.sock")), true);
});

Deno.test("ssh address: bad input is an AddressError saying what is wrong", () => {
  const cases: [unknown, RegExp][] = [
    ["ssh://", /host is empty/],
    ["ssh://host", /remote socket path is missing/],
    ["ssh://host/", /remote socket path is missing/],
    ["ssh:///run/q.sock", /host is empty/],
    ["ssh://@host/q.sock", /user is empty/],
    ["ssh://host:0/q.sock", /1 to 65535/],
    ["ssh://host:ab/q.sock", /1 to 65535/],
    ["ssh://[::1/q.sock", /missing '\]'/],
    ["ssh://-oProxyCommand=x/q.sock", /may not start with '-'/],
    ["ssh://-l@host/q.sock", /may not start with '-'/],
    ["ssh://host/a:b.sock", /':'/],
    ["ssh://ho st/q.sock", /space or control/],
    ["ssh:/host/q.sock", /ssh:\/\/\[USER@\]HOST\[:PORT\]\/PATH/],
    ["ssh:host/q.sock", /ssh:\/\/\[USER@\]HOST\[:PORT\]\/PATH/],
    ["ftp://host/q.sock", /unknown scheme "ftp:\/\/"/],
    ["SSH2://host/q.sock", /unknown scheme/],
    [{ transport: "ssh", hostname: "h", path: "rel" }, /absolute/],
    [{ transport: "ssh", hostname: "", path: "/x" }, /hostname/],
  ];
  for (const [input, re] of cases) {
    assert.throws(() => parseAddress(input as string), (e: unknown) => {
      assert.ok(e instanceof AddressError, `${JSON.stringify(input)}: ${e}`);
      assert.match(e.message, re, JSON.stringify(input));
      assert.match(e.message, /ssh:\/\/\[USER@\]HOST\[:PORT\]\/PATH/);
      return true;
    });
  }
});
