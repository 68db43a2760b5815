#!/usr/bin/env python3
"""Raw QMP baseline for bench/roundtrip.ts: the fastest a client can go.

Usage: raw_baseline.py SOCKET_PATH N MODE [WARMUP]
  MODE "seq":  N sequential round trips: write a fixed query-status request,
               read one CRLF-terminated reply line.
  MODE "pipe": oob enabled, N requests with 8 in flight (QEMU's in-band
               queue limit), one more written per reply line read.
Prints one JSON line: {"mode", "n", "seconds", "per_second"}.
No JSON parsing of replies: this is the protocol's cost floor.
"""
import json
import socket
import sys
import time

REQUEST = b'{"execute": "query-status"}'
WINDOW = 8


def main() -> None:
    path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    rfile = sock.makefile("rb")

    def line() -> bytes:
        reply = rfile.readline()
        if not reply.endswith(b"\r\n"):
            raise SystemExit(f"connection ended: {reply!r}")
        return reply

    line()  # greeting
    enable = ', "arguments": {"enable": ["oob"]}' if mode == "pipe" else ""
    sock.sendall(('{"execute": "qmp_capabilities"%s}' % enable).encode())
    if b'"return"' not in line():
        raise SystemExit("negotiation failed")

    def sequential(count: int) -> None:
        for _ in range(count):
            sock.sendall(REQUEST)
            line()

    def pipelined(count: int) -> None:
        sent = min(WINDOW, count)
        sock.sendall(REQUEST * sent)
        for _ in range(count):
            line()
            if sent < count:
                sock.sendall(REQUEST)
                sent += 1

    run = pipelined if mode == "pipe" else sequential
    run(warmup)
    t0 = time.perf_counter()
    run(n)
    seconds = time.perf_counter() - t0
    sock.close()
    print(json.dumps({"mode": mode, "n": n, "seconds": seconds, "per_second": n / seconds}))


if __name__ == "__main__":
    main()
