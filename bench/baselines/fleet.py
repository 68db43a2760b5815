#!/usr/bin/env python3
"""Raw asyncio fleet baseline for bench/fleet.ts: the same work as qmpkit's
fleet, with a bare asyncio client (no JSON parsing beyond finding events).

Usage:
  fleet.py vms COUNT COMMANDS DIR QEMU_ARGV_JSON [WARM]
      COUNT QEMUs at once, argv from QEMU_ARGV_JSON with "@SOCK@" replaced
      by DIR/<i>.sock. Each: spawn, connect (retry), negotiate, COMMANDS x
      query-status, stop/cont/stop/cont/system_reset each awaiting its event
      and return, quit, wait for exit. With WARM, first WARM such QEMUs one
      after the other before RSS is first read.
  fleet.py fake COUNT COMMANDS SOCKET_PATH [WARM]
      COUNT connections at once to a fake server: greeting, negotiate, wait
      until all are connected (RSS sampled there), COMMANDS x query-status, close.
      With WARM, first WARM connections one after the other (greeting,
      negotiate, one query-status, close) before RSS is first read.
Prints one JSON line: total seconds, per-item seconds, RSS delta.
"""
import asyncio
import json
import os
import sys
import time

CAPS = b'{"execute": "qmp_capabilities"}'
STATUS = b'{"execute": "query-status", "id": %d}'


def die_with_parent() -> None:
    """Linux: SIGKILL the calling process when its parent dies (no orphaned QEMU)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def call(reader, writer, request: bytes, event: bytes | None = None) -> None:
    """Writes a request and reads until its return (and its event, if named)."""
    writer.write(request)
    got_return = False
    got_event = event is None
    while not (got_return and got_event):
        line = await reader.readline()
        if not line:
            raise EOFError("connection closed")
        if line.startswith(b'{"timestamp"') or b'"event"' in line[:80]:
            if event is not None and b'"event": "%s"' % event in line:
                got_event = True
        else:
            got_return = True


async def vm(i: int, argv: list, sockdir: str, commands: int) -> float:
    t0 = time.perf_counter()
    sock = f"{sockdir}/{i}.sock"
    proc = await asyncio.create_subprocess_exec(
        *[a.replace("@SOCK@", sock) for a in argv],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(sock)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if proc.returncode is not None:
                    raise RuntimeError(f"QEMU exited with {proc.returncode} before its monitor was up")
                await asyncio.sleep(0.01)
        await reader.readline()
        await call(reader, writer, CAPS)
        for k in range(commands):
            await call(reader, writer, STATUS % k)
        for cmd, ev in (("stop", b"STOP"), ("cont", b"RESUME"), ("stop", b"STOP"),
                        ("cont", b"RESUME"), ("system_reset", b"RESET")):
            await call(reader, writer, b'{"execute": "%s", "id": 1}' % cmd.encode(), ev)
        writer.write(b'{"execute": "quit", "id": 2}')
        try:
            while await reader.readline():
                pass
        except ConnectionResetError:
            pass
        writer.close()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return time.perf_counter() - t0


async def fake(path: str, commands: int, connected: asyncio.Event, arrived: list, total: int):
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    await call(reader, writer, CAPS)
    arrived[0] += 1
    if arrived[0] == total:
        connected.set()
    await connected.wait()
    for k in range(commands):
        await call(reader, writer, STATUS % k)
    writer.close()
    return time.perf_counter() - t0


async def main() -> None:
    die_with_parent()
    mode, count, commands = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "fake" and len(sys.argv) > 5:
        for k in range(int(sys.argv[5])):
            reader, writer = await asyncio.open_unix_connection(sys.argv[4])
            await reader.readline()
            await call(reader, writer, CAPS)
            await call(reader, writer, STATUS % k)
            writer.close()
            await writer.wait_closed()
    if mode == "vms" and len(sys.argv) > 6:
        for k in range(int(sys.argv[6])):
            await vm(count + k, json.loads(sys.argv[5]), sys.argv[4], commands)
    before = rss()
    peak = [before]

    async def sampler():
        while True:
            peak[0] = max(peak[0], rss())
            await asyncio.sleep(0.02)

    sampling = asyncio.create_task(sampler())
    at_connected = {}
    t0 = time.perf_counter()
    if mode == "vms":
        sockdir, argv = sys.argv[4], json.loads(sys.argv[5])
        items = await asyncio.gather(*(vm(i, argv, sockdir, commands) for i in range(count)))
    else:
        connected = asyncio.Event()
        arrived = [0]

        async def at_barrier():
            await connected.wait()
            now = rss()
            peak[0] = max(peak[0], now)
            at_connected["rss"] = now - before

        barrier = asyncio.create_task(at_barrier())
        items = await asyncio.gather(
            *(fake(sys.argv[4], commands, connected, arrived, count) for _ in range(count)))
        await barrier
    seconds = time.perf_counter() - t0
    sampling.cancel()
    out = {"seconds": seconds, "items": items, "rssDelta": peak[0] - before}
    if at_connected:
        out["connected"] = at_connected
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
