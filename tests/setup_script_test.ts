/**
 * scripts/setup.sh reports on stderr only: stdout stays clean for scripts.
 * Runs only where everything is installed already (then setup.sh just checks
 * and finds the tiny guest cached), so the test never installs packages.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";

const SETUP = new URL("../scripts/setup.sh", import.meta.url).pathname;

function installed(): boolean {
  const has = (cmd: string, ...args: string[]) => {
    try {
      return new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).outputSync()
        .success;
    } catch {
      return false;
    }
  };
  return ["qemu-system-x86_64", "qemu-img", "cpio", "tmux"].every((c) =>
    has(c, "--version") || has(c, "-V")
  ) &&
    has("dpkg", "-s", "busybox-static") && has("ssh", "-V") && has("test", "-x", "/usr/sbin/sshd");
}

Deno.test({
  name: "setup.sh: nothing on stdout when everything is installed",
  ignore: !installed(),
  async fn() {
    const out = await new Deno.Command("bash", {
      args: [SETUP],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, stderr);
    assertEquals(new TextDecoder().decode(out.stdout), "");
    assert(/^setup: tiny guest: \/.+$/m.test(stderr), stderr);
  },
});
