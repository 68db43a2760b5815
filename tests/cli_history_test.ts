/**
 * The shell's history file (scripts/cli/history_file.ts) on real files:
 * symlinks, FIFOs and devices are neither read nor written, large files are
 * read from their end, saving replaces the file atomically with mode 0600.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  HISTORY_MAX_BYTES,
  loadHistoryFile,
  saveHistoryFile,
} from "../scripts/cli/history_file.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-history-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("history file: missing, then saved as a 0600 file through a rename", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/state/qmpkit/history`;
    const loaded = await loadHistoryFile(path);
    assertEquals([loaded.history.entries, loaded.save, loaded.warning], [[], true, undefined]);
    assertEquals(saveHistoryFile(path, ["query-status", "hmp"]), undefined);
    assertEquals(await Deno.readTextFile(path), "query-status\nhmp\n");
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(`${dir}/state/qmpkit`)).mode! & 0o777, 0o700);
    const again = await loadHistoryFile(path);
    assertEquals(again.history.entries, ["query-status", "hmp"]);
    // An existing 0644 file is replaced by a 0600 one; no temporary file is left.
    await Deno.chmod(path, 0o644);
    assertEquals(saveHistoryFile(path, ["x"]), undefined);
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    const names = [];
    for await (const e of Deno.readDir(`${dir}/state/qmpkit`)) names.push(e.name);
    assertEquals(names, ["history"]);
  });
});

Deno.test("history file: a symlink, FIFO, device or directory is not read or written", async () => {
  await withDir(async (dir) => {
    const target = `${dir}/precious`;
    await Deno.writeTextFile(target, "keep me\n");
    await Deno.chmod(target, 0o644);
    await Deno.symlink(target, `${dir}/link`);
    await Deno.symlink("/dev/zero", `${dir}/zero`);
    await Deno.mkdir(`${dir}/dir`);
    const mkfifo = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assert(mkfifo.success);
    const kinds: Record<string, string> = {
      link: "a symbolic link",
      zero: "a symbolic link",
      fifo: "a FIFO",
      dir: "a directory",
    };
    for (const [name, kind] of Object.entries(kinds)) {
      const path = `${dir}/${name}`;
      const loaded = await loadHistoryFile(path);
      assertEquals(loaded.history.entries, []);
      assertEquals(loaded.save, false);
      assertEquals(
        loaded.warning,
        `history file ${path} is not a regular file (${kind}): history is not read or saved`,
      );
      assert(saveHistoryFile(path, ["query-status"])?.includes("not a regular file"));
    }
    assertEquals(await Deno.readTextFile(target), "keep me\n");
    assertEquals((await Deno.stat(target)).mode! & 0o777, 0o644);
    assert((await Deno.lstat(`${dir}/link`)).isSymlink);
    assert((await Deno.lstat(`${dir}/fifo`)).isFifo);
  });
});

Deno.test("history file: a file larger than the bound is read from its end", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/history`;
    const line = "x".repeat(99);
    const count = Math.ceil((3 * HISTORY_MAX_BYTES) / 100);
    const lines = Array.from({ length: count }, (_, i) => `${i} ${line}`);
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const loaded = await loadHistoryFile(path);
    assertEquals(loaded.save, true);
    assertEquals(loaded.history.entries.length, 1000);
    assertEquals(loaded.history.entries.at(-1), lines.at(-1));
    const small = await loadHistoryFile(path, { maxBytes: 250, limit: 10 });
    // 250 bytes from the end: a cut line (dropped), then whole lines.
    assertEquals(small.history.entries, lines.slice(-2));
  });
});

Deno.test("history file: secrets typed in the shell are redacted in the saved file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/history`;
    const lines = [
      "object-add qom-type=secret id=s0 data=hunter2-history",
      "set_password protocol=vnc password=hunter3-history",
      "change-vnc-password password=hunter4-history",
      'object_add {"qom-type":"secret","id":"s1","data":"hunter5-history"}',
      "query-status",
    ];
    assertEquals(saveHistoryFile(path, lines), undefined);
    const saved = await Deno.readTextFile(path);
    assert(!/hunter\d-history/.test(saved), saved);
    assert(saved.includes("query-status\n"), saved);
    assertEquals(saved.trimEnd().split("\n").length, lines.length);
  });
});
