#!/usr/bin/env python3
"""Raw one-shot QMP client for bench/cli_startup.ts: the CLI start-up baseline.

Usage: oneshot.py SOCKET_PATH
Connects, reads the greeting, negotiates, runs query-status, prints its
return value as JSON, exits. Standard library only, no error handling.
"""
import json
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
rfile = sock.makefile("rb")
rfile.readline()  # greeting
sock.sendall(b'{"execute": "qmp_capabilities", "id": 1}')
rfile.readline()
sock.sendall(b'{"execute": "query-status", "id": 2}')
print(json.dumps(json.loads(rfile.readline())["return"]))
sock.close()
