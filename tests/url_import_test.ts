/**
 * The library works when imported from a URL with no config: the repo root is
 * served over HTTP on 127.0.0.1, and a fresh `deno run --no-config` (fresh
 * DENO_DIR, so nothing is cached) imports `mod.ts` from it and talks to a real
 * QEMU. Deno 2 needs `--allow-import=HOST:PORT` for http imports outside its
 * default allow-list; the last test shows that.
 */
import assert from "node:assert/strict";
import { join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { startQemu } from "./helpers/qemu.ts";

const ROOT = normalize(fileURLToPath(new URL("..", import.meta.url)));

interface RepoServer extends AsyncDisposable {
  port: number;
  served: string[];
}

/** Serves the repo's files read-only on 127.0.0.1:<random port>. */
async function serveRepo(): Promise<RepoServer> {
  const served: string[] = [];
  let listening!: (port: number) => void;
  const port = new Promise<number>((r) => (listening = r));
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => listening(port),
  }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    const file = normalize(join(ROOT, path));
    if (!file.startsWith(ROOT) || !/\.(ts|js|json)$/.test(file)) {
      return new Response("not found", { status: 404 });
    }
    try {
      const body = await Deno.readFile(file);
      served.push(path);
      const type = file.endsWith(".json") ? "application/json" : "application/typescript";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return {
    port: await port,
    served,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** Runs `script` with a fresh DENO_DIR and no config; returns code and output. */
async function denoRun(script: string, flags: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "qmpkit-url-" });
  try {
    const file = join(dir, "script.ts");
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", ...flags, file],
      cwd: dir,
      env: {
        DENO_DIR: join(dir, "deno_dir"),
        DENO_NO_UPDATE_CHECK: "1",
        NO_COLOR: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function clientScript(port: number, address: string): string {
  return `import { connect, QmpClient } from "http://127.0.0.1:${port}/mod.ts";
await using qmp = await connect(${
    JSON.stringify(address)
  }, { timeout: "10s", commandTimeout: "10s" });
const status = await qmp.execute("query-status");
console.log(JSON.stringify({
  status,
  version: qmp.greeting.version.qemu,
  isClient: qmp instanceof QmpClient,
}));
`;
}

for (const tcp of [false, true]) {
  Deno.test(`deno run imports mod.ts over http and queries QEMU (${tcp ? "tcp" : "unix"})`, async () => {
    await using web = await serveRepo();
    await using q = await startQemu({ machine: "none", tcp });
    // TCP needs only net access. Deno 2.9 checks a unix socket three ways: read and
    // write on its path, and net access to "unix:PATH" (a scoped --allow-net=127.0.0.1
    // is not enough).
    const flags = [`--allow-import=127.0.0.1:${web.port}`];
    if (tcp) flags.push("--allow-net=127.0.0.1");
    else {
      flags.push(
        `--allow-net=127.0.0.1,unix:${q.socketPath}`,
        `--allow-read=${q.tmpdir}`,
        `--allow-write=${q.tmpdir}`,
      );
    }
    const r = await denoRun(clientScript(web.port, q.address), flags);
    assert.equal(r.code, 0, `deno run failed:\n${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout.trim()), {
      status: { status: "running", singlestep: false, running: true },
      version: { major: 7, minor: 2, micro: 22 },
      isClient: true,
    });
    // Fetched fresh over HTTP, not from a cache.
    assert.match(r.stderr, new RegExp(`Download http://127\\.0\\.0\\.1:${web.port}/mod\\.ts`));
    assert.ok(web.served.includes("/mod.ts"));
    assert.ok(web.served.includes("/lib/client.ts"));
  });
}

Deno.test("deno run without --allow-import refuses the http import", async () => {
  await using web = await serveRepo();
  const r = await denoRun(clientScript(web.port, "unix:/nonexistent/qmp.sock"), [
    "--allow-net=127.0.0.1",
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Requires import access to "127\.0\.0\.1:\d+".*--allow-import/s);
  assert.deepEqual(web.served, []);
});

Deno.test("unix socket with --allow-net=127.0.0.1 only: a ConnectionError naming the permission", async () => {
  await using web = await serveRepo();
  const script = `import { connect, ConnectionError } from "http://127.0.0.1:${web.port}/mod.ts";
try {
  await connect("unix:/nonexistent-qmpkit/qmp.sock", { timeout: "5s" });
} catch (e) {
  console.log(JSON.stringify({ connErr: e instanceof ConnectionError, name: e.name, message: e.message }));
}
`;
  const r = await denoRun(script, [
    `--allow-import=127.0.0.1:${web.port}`,
    "--allow-net=127.0.0.1",
    "--allow-read",
    "--allow-write",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim());
  assert.equal(out.connErr, true);
  assert.equal(out.name, "ConnectionError");
  assert.match(out.message, /Requires net access to "unix:\/nonexistent-qmpkit\/qmp\.sock"/);
  assert.match(out.message, /--allow-net/);
});
