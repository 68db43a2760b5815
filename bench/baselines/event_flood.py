#!/usr/bin/env python3
"""Fake QMP server for bench/events.ts: floods each client with small events.

Usage: event_flood.py SOCKET_PATH N
Listens on SOCKET_PATH (unix). For every connection, one at a time: sends a
QEMU 7.2 greeting, accepts qmp_capabilities, then on the next command replies
{"return": {}, "id": ...} and at once writes N events (QEMU's exact format:
STOP, RESUME and RESET with data, CRLF-terminated) in large blocks, then waits
for the client to close. Runs until killed. Prints "ready" once listening.
"""
import json
import os
import socket
import sys
import time

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n'
)
BLOCK_EVENTS = 4096


def block() -> bytes:
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1e6)
    out = []
    for i in range(BLOCK_EVENTS):
        ts = '{"seconds": %d, "microseconds": %d}' % (sec, (usec + i) % 1000000)
        kind = i % 4
        if kind == 3:
            out.append('{"timestamp": %s, "event": "RESET", "data": {"guest": false, '
                       '"reason": "host-qmp-system-reset"}}\r\n' % ts)
        else:
            out.append('{"timestamp": %s, "event": "%s"}\r\n' % (ts, "STOP" if kind % 2 == 0 else "RESUME"))
    return "".join(out).encode()


def read_command(conn: socket.socket, pending: bytearray) -> dict:
    """Reads one JSON object (no braces inside strings in our clients' commands)."""
    while True:
        depth = 0
        for i, b in enumerate(pending):
            if b == 0x7B:
                depth += 1
            elif b == 0x7D:
                depth -= 1
                if depth == 0:
                    msg = json.loads(bytes(pending[: i + 1]))
                    del pending[: i + 1]
                    return msg
        data = conn.recv(65536)
        if not data:
            raise EOFError
        pending += data


def serve(conn: socket.socket, n: int, blk: bytes) -> None:
    pending = bytearray()
    conn.sendall(GREETING)
    cmd = read_command(conn, pending)
    conn.sendall(b'{"return": {}, "id": %s}\r\n' % json.dumps(cmd.get("id")).encode())
    cmd = read_command(conn, pending)
    conn.sendall(b'{"return": {}, "id": %s}\r\n' % json.dumps(cmd.get("id")).encode())
    full, rest = divmod(n, BLOCK_EVENTS)
    for _ in range(full):
        conn.sendall(blk)
    if rest:
        lines = blk.split(b"\r\n")
        conn.sendall(b"\r\n".join(lines[:rest]) + b"\r\n")
    while conn.recv(65536):
        pass


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the bench that started it dies."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    die_with_parent()
    path, n = sys.argv[1], int(sys.argv[2])
    blk = block()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(4)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        try:
            serve(conn, n, blk)
        except (EOFError, ConnectionError, BrokenPipeError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
