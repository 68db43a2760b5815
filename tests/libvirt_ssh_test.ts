/**
 * The libvirt transport over a remote URI (`qemu+ssh://`) through a throwaway sshd on
 * 127.0.0.1 (tests/helpers/sshd.ts) to the local libvirtd (tests/helpers/libvirtd.ts):
 * libvirt runs `ssh` itself (BatchMode via `no_tty=1`), and on the far side
 * `virt-ssh-helper`.
 *
 * libvirt's `qemu+ssh://` gives ssh only `-p`, `-l`, `-i KEYFILE`, `-T -e none` and the
 * BatchMode / StrictHostKeyChecking options: `known_hosts=` applies to `qemu+libssh://` and
 * `qemu+libssh2://` only, so the system ssh checks the host key against root's known_hosts.
 * To keep the system's ssh files untouched, `command=` names a wrapper that runs
 * `ssh -F` with a private config knowing this sshd's host key (no identity in it: the key
 * comes from `keyfile=`).
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client.ts";
import { LibvirtError, whenLibvirtIdle } from "../lib/libvirt_ffi.ts";
import {
  createDomain,
  ensureLibvirtd,
  libvirtSkipReason,
  loadLibvirtFirst,
  releaseLibvirtd,
} from "./helpers/libvirtd.ts";
import { processesWith, type Sshd, sshdInstalled, startSshd } from "./helpers/sshd.ts";

const skip = libvirtSkipReason() ??
  (sshdInstalled() ? undefined : "openssh-server not installed (scripts/setup.sh installs it)");

/**
 * Writes `DIR/ssh`: `exec ssh -F DIR/libvirt_ssh_config "$@"`, a config with this sshd's
 * known_hosts and no identity of its own (nothing of the system's ssh files is read).
 */
async function sshWrapper(sshd: Sshd): Promise<string> {
  const config = `${sshd.dir}/libvirt_ssh_config`;
  await Deno.writeTextFile(
    config,
    [
      "Host *",
      `  UserKnownHostsFile ${sshd.knownHosts}`,
      "  GlobalKnownHostsFile /dev/null",
      "  IdentitiesOnly yes",
      "  IdentityAgent none",
      "  UpdateHostKeys no",
      "",
    ].join("\n"),
  );
  const wrapper = `${sshd.dir}/ssh`;
  await Deno.writeTextFile(wrapper, `#!/bin/sh\nexec /usr/bin/ssh -F ${config} "$@"\n`);
  await Deno.chmod(wrapper, 0o755);
  return wrapper;
}

/** `libvirt+qemu+ssh://root@127.0.0.1:PORT/system?keyfile=…&no_tty=1[&command=…]#DOMAIN`. */
function sshUri(
  sshd: Sshd,
  domain: string,
  o: { keyfile?: string; command?: string } = {},
): string {
  const q = `keyfile=${o.keyfile ?? sshd.userKey}&no_tty=1` +
    (o.command ? `&command=${o.command}` : "");
  return `libvirt+qemu+ssh://${sshd.user}@127.0.0.1:${sshd.port}/system?${q}#${domain}`;
}

/** ssh clients libvirt started for this sshd (their -i / known_hosts are in its temp dir). */
async function sshClients(sshd: Sshd): Promise<string[]> {
  return (await processesWith(sshd.dir)).filter((p) => /^(\/usr\/bin\/)?ssh /.test(p.args)).map((
    p,
  ) => p.args);
}

/** Polls until libvirt's ssh clients for `sshd` are gone, or `ms` pass; returns what is left. */
async function clientsGone(sshd: Sshd, ms: number): Promise<string[]> {
  const until = Date.now() + ms;
  let left = await sshClients(sshd);
  while (left.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    left = await sshClients(sshd);
  }
  return left;
}

loadLibvirtFirst();

Deno.test({
  name: "libvirt over ssh: qemu+ssh:// through a local sshd; command, event, close; wrong key",
  ignore: skip !== undefined,
  async fn(t) {
    await ensureLibvirtd();
    try {
      await using sshd = await startSshd();
      await using dom = await createDomain();
      const command = await sshWrapper(sshd);

      await t.step("query-status, stop -> STOP, close (ssh ends)", async () => {
        const address = sshUri(sshd, dom.name, { command });
        const qmp = await connect(address, { timeout: "20s" });
        try {
          assert.equal(qmp.address, address);
          assert.equal(qmp.greeting.version.qemu.major, 7);
          assert.equal((await qmp.execute("query-status")).status, "running");
          const stopped = qmp.waitEvent("STOP", { timeout: "10s" });
          await qmp.execute("stop");
          assert.equal((await stopped).event, "STOP");
          assert.equal((await qmp.execute("query-status")).status, "paused");
          // libvirt really went through this sshd: its ssh client is running now.
          const clients = await sshClients(sshd);
          assert.equal(clients.length, 1, clients.join("\n"));
          assert.match(clients[0], new RegExp(`-p ${sshd.port} -l root -i ${sshd.userKey} `));
          assert.match(clients[0], /-o BatchMode=yes/); // no_tty=1: ssh never prompts
          assert.match(clients[0], /virt-ssh-helper/); // the remote command libvirt runs
          assert.match(sshd.log(), /Accepted publickey for root from 127\.0\.0\.1/);
        } finally {
          await qmp.close();
        }
        assert.deepEqual(await clientsGone(sshd, 5_000), []);
        await whenLibvirtIdle(5_000);
      });

      await t.step("a key the server does not accept: libvirt's error, one line", async () => {
        const wrong = await sshd.newKey("wrong_key");
        const t0 = performance.now();
        const err = await connect(sshUri(sshd, dom.name, { keyfile: wrong, command }), {
          timeout: "20s",
        }).then(
          () => assert.fail("connect() should have failed"),
          (e) => e,
        );
        const ms = performance.now() - t0;
        assert.ok(err instanceof LibvirtError, String(err));
        assert.match(err.message, /^Cannot connect to libvirt at qemu\+ssh:\/\/root@127\.0\.0\.1:/);
        assert.match(
          err.message,
          /: libvirt: Cannot recv data: root@127\.0\.0\.1: Permission denied \(publickey\)\.: Connection reset by peer$/,
        );
        assert.doesNotMatch(err.message, /\n/, "one line");
        assert.doesNotMatch(err.message, /PRIVATE KEY/);
        assert.ok(ms < 20_000, `took ${ms} ms`);
        assert.deepEqual(await clientsGone(sshd, 5_000), []);
        await whenLibvirtIdle(5_000);
      });

      await t.step("without the wrapper: the system ssh does not know the host key", async () => {
        // known_hosts= is not given to ssh by qemu+ssh://: root's known_hosts decides, and
        // BatchMode (no_tty=1) turns the unknown key into a failure instead of a prompt.
        const known = `known_hosts=${sshd.knownHosts}`;
        const address = sshUri(sshd, dom.name).replace("#", `&${known}#`);
        const err = await connect(address, { timeout: "20s" }).then(
          () => assert.fail("connect() should have failed"),
          (e) => e,
        );
        assert.ok(err instanceof LibvirtError, String(err));
        assert.match(err.message, /libvirt: Cannot recv data: Host key verification failed\./);
        assert.doesNotMatch(err.message, /\n/, "one line");
        assert.deepEqual(await clientsGone(sshd, 5_000), []);
        await whenLibvirtIdle(5_000);
      });
    } finally {
      await releaseLibvirtd();
    }
  },
});
