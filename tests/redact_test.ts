import assert from "node:assert/strict";
import { REDACTED, redactMessage } from "../lib/redact.ts";

Deno.test("redact: secrets are replaced, the rest kept, the input untouched", () => {
  const msg = {
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "sec0", data: "letmein", format: "raw" },
    id: 3,
  };
  const out = redactMessage(msg);
  assert.deepEqual(out, {
    execute: "object-add",
    arguments: { "qom-type": "secret", id: "sec0", data: REDACTED, format: "raw" },
    id: 3,
  });
  assert.equal(msg.arguments.data, "letmein");
  assert.deepEqual(
    redactMessage({ execute: "set_password", arguments: { protocol: "vnc", password: "pw" } }),
    { execute: "set_password", arguments: { protocol: "vnc", password: REDACTED } },
  );
  assert.deepEqual(
    redactMessage({
      execute: "blockdev-add",
      arguments: { driver: "luks", "key-secret": "sec0", file: { "x-password": "p" } },
    }),
    {
      // key-secret names a secret object ("sec0"): a reference, kept readable.
      execute: "blockdev-add",
      arguments: { driver: "luks", "key-secret": "sec0", file: { "x-password": REDACTED } },
    },
  );
  assert.deepEqual(
    redactMessage({
      execute: "human-monitor-command",
      arguments: { "command-line": "object_add secret,id=s,data=hunter2,format=raw" },
    }).arguments["command-line"],
    `object_add secret,id=s,data=${REDACTED},format=raw`,
  );
  assert.equal(
    redactMessage({ arguments: { "command-line": "set_password vnc hunter2" } }).arguments[
      "command-line"
    ],
    `set_password vnc ${REDACTED}`,
  );
  // Non-secret data members are kept.
  assert.deepEqual(redactMessage({ event: "X", data: { secretive: 1, data: "ok" } }), {
    event: "X",
    data: { secretive: 1, data: "ok" },
  });
});

Deno.test("redact: HMP 'change vnc password' and QemuOpts escaped commas", () => {
  const hmp = (line: string) =>
    redactMessage({ execute: "human-monitor-command", arguments: { "command-line": line } })
      .arguments["command-line"];
  assert.equal(hmp("change vnc password hunter2"), `change vnc password ${REDACTED}`);
  assert.equal(
    hmp("object_add secret,id=s0,data=hunt,,er2,format=raw"),
    `object_add secret,id=s0,data=${REDACTED},format=raw`,
  );
});
