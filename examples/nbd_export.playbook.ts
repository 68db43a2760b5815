/**
 * No VM: `qemu-storage-daemon` exports a qcow2 image over NBD. The image is
 * made with qemu-img in the playbook's temp dir, opened with blockdev-add,
 * served by nbd-server-start on a unix socket and block-export-add; a client
 * (qemu-io) writes a pattern through the export and reads it back, qemu-img
 * reads the export's size, then the export is removed (BLOCK_EXPORT_DELETED)
 * and the pattern is found in the qcow2 file itself. `t.qmp` speaks the
 * daemon's schema: a VM command such as `query-status` would not type-check.
 *
 * @module
 */
import { playbook } from "../lib/runner/playbook.ts";

/** Runs a qemu-utils tool; its output, or an error with its stderr. */
async function tool(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${d.decode(out.stderr)}`);
  return d.decode(out.stdout);
}

export default playbook({
  name: "nbd export: qemu-storage-daemon serves a qcow2, qemu-io writes and reads it back",
  description: "blockdev-add, nbd-server-start (unix), block-export-add, qemu-io/qemu-img over NBD",
  vm: { storageDaemon: true },
  tags: ["block", "storage-daemon"],
  timeout: "1m",
}, async (t) => {
  const image = `${t.tempDir}/disk.qcow2`;
  const socket = `${t.tempDir}/nbd.sock`;
  const url = `nbd+unix:///disk0?socket=${socket}`;

  await t.step("open a qcow2 image", async () => {
    await tool("qemu-img", "create", "-q", "-f", "qcow2", image, "16M");
    await t.qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "disk0",
      file: { driver: "file", filename: image },
    });
    t.cleanup(() => t.qmp.execute("blockdev-del", { "node-name": "disk0" }));
    const nodes = await t.qmp.execute("query-named-block-nodes", { flat: true });
    t.expect(nodes).toContain({ "node-name": "disk0", drv: "qcow2" });
  });

  await t.step("export it over NBD on a unix socket", async () => {
    await t.qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: socket } } });
    t.cleanup(() => t.qmp.execute("nbd-server-stop"));
    await t.qmp.execute("block-export-add", {
      type: "nbd",
      id: "export0",
      "node-name": "disk0",
      name: "disk0",
      writable: true,
    });
    const exports = await t.qmp.execute("query-block-exports");
    t.expect(exports).toContain({ id: "export0", type: "nbd", "node-name": "disk0" });
  });

  await t.step("qemu-io writes a pattern through the export and reads it back", async () => {
    await tool("qemu-io", "-f", "raw", "-c", "write -P 0xc5 2M 256k", url);
    const read = await tool("qemu-io", "-f", "raw", "-c", "read -P 0xc5 2M 256k", url);
    t.expect(read).toContain("read 262144/262144 bytes");
    t.expect(read).not.toContain("Pattern verification failed");
    const info = JSON.parse(await tool("qemu-img", "info", "--output=json", url));
    t.expect(info["virtual-size"]).toBe(16 * 1024 * 1024);
  });

  await t.step("remove the export: BLOCK_EXPORT_DELETED", async () => {
    await t.expectEvent(
      "BLOCK_EXPORT_DELETED",
      () => t.qmp.execute("block-export-del", { id: "export0" }),
      { where: { id: "export0" }, timeout: "10s" },
    );
    t.expect(await t.qmp.execute("query-block-exports")).toHaveLength(0);
  });

  await t.step("the pattern is in the qcow2 file", async () => {
    // The daemon still holds the image (no locking conflict for a read-only look with -U).
    const check = await tool(
      "qemu-io",
      "-U",
      "-r",
      "-f",
      "qcow2",
      "-c",
      "read -P 0xc5 2M 256k",
      image,
    );
    t.expect(check).not.toContain("Pattern verification failed");
  });
});
