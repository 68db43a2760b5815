/**
 * Real-QEMU lifecycle test with the tiny guest (`deno task guest` builds it): boot under
 * TCG, wait for the ready marker on the serial console, run a command in the guest shell,
 * then `system_powerdown` over a raw QMP socket and expect a guest-initiated SHUTDOWN and
 * a clean QEMU exit. Ignored when the guest is not built or QEMU is not installed.
 *
 * Permissions: --allow-read --allow-write (temp dir, QMP socket, guest cache)
 * --allow-env (cache location) --allow-run=qemu-system-x86_64.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { findTinyGuest, GuestNotBuiltError, type TinyGuest } from "../lib/guest.ts";

const QEMU = "qemu-system-x86_64";
const BOOT_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 30_000;

async function onPath(command: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if ((await Deno.stat(join(dir || ".", command))).isFile) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

let guest: TinyGuest | undefined;
let skipReason = "";
try {
  guest = await findTinyGuest();
  if (!(await onPath(QEMU))) skipReason = `${QEMU} not found on PATH`;
} catch (e) {
  if (!(e instanceof GuestNotBuiltError)) throw e;
  skipReason = e.message;
}
if (skipReason) console.warn(`tests/guest_test.ts: ignoring the tiny guest test: ${skipReason}`);

/** Rejects with a clear message if `promise` does not settle within `ms`; never leaks its timer. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Drains a byte stream into a string in the background; lets callers wait for content. */
class TextPump {
  text = "";
  ended = false;
  readonly done: Promise<void>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #wake: (() => void)[] = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
    this.done = this.#pump();
  }

  async #pump(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        this.text += decoder.decode(value, { stream: true });
        this.#notify();
      }
    } catch {
      // The stream was cancelled or the peer went away: treat as end of input.
    } finally {
      this.ended = true;
      this.#notify();
    }
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }

  /** Resolves with `check`'s first non-undefined result, re-evaluated on every new chunk. */
  async waitFor<T>(check: (text: string) => T | undefined, ms: number, what: string): Promise<T> {
    const loop = async (): Promise<T> => {
      for (;;) {
        const result = check(this.text);
        if (result !== undefined) return result;
        if (this.ended) throw new Error(`stream ended while waiting for ${what}`);
        await new Promise<void>((resolve) => this.#wake.push(resolve));
      }
    };
    return await within(loop(), ms, what);
  }

  /** Stops reading (idempotent) and waits for the pump to finish. */
  async stop(): Promise<void> {
    if (!this.ended) await this.#reader.cancel().catch(() => {});
    await this.done;
  }
}

type QmpMessage = Record<string, unknown>;

/** Parses the complete CRLF-terminated JSON lines QEMU has sent so far. */
function qmpMessages(text: string): QmpMessage[] {
  return text.split("\n").slice(0, -1).filter((line) => line.trim()).map((line) =>
    JSON.parse(line) as QmpMessage
  );
}

async function connectUnix(path: string, ms: number): Promise<Deno.UnixConn> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      const retry = e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused;
      if (!retry || Date.now() > deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

Deno.test({
  name: skipReason
    ? `tiny guest: boot, shell, system_powerdown (ignored: ${skipReason})`
    : "tiny guest: boot, shell, system_powerdown -> SHUTDOWN guest=true, exit 0",
  ignore: guest === undefined || skipReason !== "",
  async fn() {
    const g = guest!;
    const tmp = await Deno.makeTempDir({ prefix: "qmpkit-guest-test-" });
    const socketPath = join(tmp, "qmp.sock");
    const started = performance.now();
    const child = new Deno.Command(QEMU, {
      args: [
        ...["-M", "pc", "-accel", "tcg", "-m", "128"],
        ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
        ...["-serial", "stdio"],
        ...["-kernel", g.kernel, "-initrd", g.initrd, "-append", g.append],
        ...["-qmp", `unix:${socketPath},server=on,wait=off`],
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const serial = new TextPump(child.stdout);
    const stderr = new TextPump(child.stderr);
    const stdin = child.stdin.getWriter();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    let conn: Deno.UnixConn | undefined;
    let qmp: TextPump | undefined;
    try {
      await serial.waitFor(
        (t) => t.includes(g.readyMarker) || undefined,
        BOOT_TIMEOUT_MS,
        `the ready marker ${g.readyMarker}`,
      ).catch((e) => {
        throw new Error(
          `${e.message}; serial: ${JSON.stringify(serial.text.slice(-2000))}; stderr: ${
            JSON.stringify(stderr.text.slice(-2000))
          }`,
        );
      });
      const bootSeconds = (performance.now() - started) / 1000;
      console.log(`tiny guest ready after ${bootSeconds.toFixed(2)} s (TCG)`);

      // The serial console runs a shell: the output proves the command really ran.
      await stdin.write(new TextEncoder().encode("echo qmpkit-$((6*7))\n"));
      await serial.waitFor((t) => t.includes("qmpkit-42") || undefined, STEP_TIMEOUT_MS, "shell");

      conn = await connectUnix(socketPath, STEP_TIMEOUT_MS);
      qmp = new TextPump(conn.readable);
      const writer = conn.writable.getWriter();
      const send = (message: QmpMessage) =>
        writer.write(new TextEncoder().encode(`${JSON.stringify(message)}\n`));
      const find = (pred: (m: QmpMessage) => boolean, what: string) =>
        qmp!.waitFor((t) => qmpMessages(t).find(pred), STEP_TIMEOUT_MS, what);

      const greeting = await find((m) => "QMP" in m, "the QMP greeting");
      assert.ok(typeof greeting.QMP === "object");
      await send({ execute: "qmp_capabilities", id: "caps" });
      const caps = await find((m) => m.id === "caps", "the qmp_capabilities reply");
      assert.deepEqual(caps.return, {});

      const poweredAt = performance.now();
      await send({ execute: "system_powerdown", id: "off" });
      const reply = await find((m) => m.id === "off", "the system_powerdown reply");
      assert.deepEqual(reply.return, {});
      const shutdown = await find((m) => m.event === "SHUTDOWN", "the SHUTDOWN event");
      assert.deepEqual(shutdown.data, { guest: true, reason: "guest-shutdown" });
      const events = qmpMessages(qmp.text).filter((m) => "event" in m).map((m) => m.event);
      assert.ok(
        events.indexOf("POWERDOWN") >= 0 &&
          events.indexOf("POWERDOWN") < events.indexOf("SHUTDOWN"),
        `POWERDOWN before SHUTDOWN, got ${events.join(", ")}`,
      );
      writer.releaseLock();

      const { code } = await within(status, EXIT_TIMEOUT_MS, "QEMU to exit after SHUTDOWN");
      console.log(
        `powerdown -> exit in ${((performance.now() - poweredAt) / 1000).toFixed(2)} s`,
      );
      assert.equal(code, 0, `QEMU exit code; stderr: ${stderr.text}`);
      const poweroffMarker = g.manifest.poweroffMarker;
      if (typeof poweroffMarker === "string") {
        await serial.waitFor((_t) => serial.ended || undefined, STEP_TIMEOUT_MS, "serial EOF");
        assert.ok(serial.text.includes(poweroffMarker), "the guest's poweroff hook ran");
      }
    } finally {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // it exited in the meantime
        }
      }
      await status;
      await qmp?.stop();
      try {
        conn?.close();
      } catch {
        // already closed by cancelling its readable stream
      }
      await stdin.close().catch(() => {});
      await serial.stop();
      await stderr.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
