/**
 * Why sshd could not open a remote socket. OpenSSH tells the client only
 * "connect failed: open failed", whatever the cause; this asks the host's SFTP
 * subsystem (part of OpenSSH, no shell involved) what is at the path: nothing,
 * a regular file, a directory, a socket. Best effort, used only to explain a
 * failure: any trouble (no SFTP subsystem, a chrooted one, a timeout) gives
 * `undefined`, and the caller keeps its generic message.
 *
 * Speaks just enough of SFTP version 3 (draft-ietf-secsh-filexfer-02):
 * `SSH_FXP_INIT`, then one `SSH_FXP_STAT`, answered by `SSH_FXP_ATTRS` or
 * `SSH_FXP_STATUS`.
 *
 * @module
 */
import { concatBytes } from "./bytes.ts";
import { guardCommand, killProcessGroup } from "./orphan_guard.ts";

const FXP_INIT = 1;
const FXP_VERSION = 2;
const FXP_STAT = 17;
const FXP_STATUS = 101;
const FXP_ATTRS = 105;
const STATUS_NO_SUCH_FILE = 2;
const STATUS_PERMISSION_DENIED = 3;
const ATTR_SIZE = 0x1;
const ATTR_UIDGID = 0x2;
const ATTR_PERMISSIONS = 0x4;

const FILE_TYPES: Record<number, string> = {
  0o140000: "a socket",
  0o100000: "a regular file",
  0o040000: "a directory",
  0o020000: "a character device",
  0o060000: "a block device",
  0o010000: "a FIFO",
};

/**
 * Asks the remote SFTP subsystem about `path` through `ssh ARGS -s -- HOST sftp`
 * (`args`: the connection's options, `-l`, `-p`). Resolves with a description
 * ("does not exist", "is a regular file", "is a socket", "may not be looked at
 * by the ssh user") or `undefined` when it could not tell within `timeoutMs`.
 */
export async function describeRemotePath(
  binary: string,
  args: string[],
  host: string,
  path: string,
  timeoutMs: number,
): Promise<string | undefined> {
  if (timeoutMs < 50) return undefined;
  const cmd = guardCommand(binary, [...args, "-s", "--", host, "sftp"], "ssh started by connect()");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd.command, {
      args: cmd.args,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      detached: true,
    }).spawn();
  } catch {
    return undefined;
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  const writer = child.stdin.getWriter();
  const reader = child.stdout.getReader();
  try {
    await writer.write(packet(FXP_INIT, u32(3)));
    const version = await readPacket(reader);
    if (version?.type !== FXP_VERSION) return undefined;
    const id = 1;
    await writer.write(packet(FXP_STAT, concatBytes([u32(id), sshString(path)])));
    const reply = await readPacket(reader);
    if (!reply || reply.body.length < 4) return undefined;
    const view = new DataView(reply.body.buffer, reply.body.byteOffset, reply.body.byteLength);
    if (view.getUint32(0) !== id) return undefined;
    if (reply.type === FXP_STATUS && reply.body.length >= 8) {
      const code = view.getUint32(4);
      if (code === STATUS_NO_SUCH_FILE) return "does not exist";
      if (code === STATUS_PERMISSION_DENIED) return "may not be looked at by the ssh user";
      return undefined;
    }
    if (reply.type !== FXP_ATTRS || reply.body.length < 8) return undefined;
    const flags = view.getUint32(4);
    let off = 8;
    if (flags & ATTR_SIZE) off += 8;
    if (flags & ATTR_UIDGID) off += 8;
    if (!(flags & ATTR_PERMISSIONS) || reply.body.length < off + 4) return undefined;
    const type = FILE_TYPES[view.getUint32(off) & 0o170000];
    return type === undefined ? undefined : `is ${type}`;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    await writer.close().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await reader.cancel().catch(() => {});
    await child.status;
    killProcessGroup(child.pid);
  }
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function sshString(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  return concatBytes([u32(bytes.length), bytes]);
}

function packet(type: number, body: Uint8Array): Uint8Array {
  return concatBytes([u32(body.length + 1), new Uint8Array([type]), body]);
}

/** Reads one SFTP packet (at most 64 KiB); `undefined` at EOF. */
async function readPacket(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<{ type: number; body: Uint8Array } | undefined> {
  const head = await readExactly(reader, 4);
  if (!head) return undefined;
  const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
  if (length < 1 || length > 64 * 1024) return undefined;
  const rest = await readExactly(reader, length);
  if (!rest) return undefined;
  return { type: rest[0], body: rest.subarray(1) };
}

/** Bytes read past the last packet, per stream. */
const buffers = new WeakMap<ReadableStreamDefaultReader<Uint8Array>, Uint8Array>();

async function readExactly(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  n: number,
): Promise<Uint8Array | undefined> {
  let pending = buffers.get(reader) ?? new Uint8Array(0);
  while (pending.length < n) {
    const { value, done } = await reader.read();
    if (done) return undefined;
    pending = concatBytes([pending, value]);
  }
  const out = pending.slice(0, n);
  buffers.set(reader, pending.slice(n));
  return out;
}
