#!/usr/bin/env python3
"""A test server. Prints `listening PORT`, then `accepted` and `request` as they happen, flushed,
so a test can act at the right moment.

  --mode silent   reads each request and never answers (a hung service)
  --mode http     answers every request with a small HTTP/1.1 keep-alive response
  --mode once     accepts one client, waits for data, prints how the wait ended, exits
"""

import argparse
import socket
import sys
import threading
import time


def say(*words):
    print(*words, flush=True)


def silent(conn):
    conn.recv(65536)
    say("request")
    while conn.recv(65536):
        pass


def http(conn):
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            say("request")
            body = b"ok\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s"
                         % (len(body), body))


def once(srv):
    conn, _ = srv.accept()
    say("accepted")
    start = time.monotonic()
    try:
        data = conn.recv(65536)
        say("closed" if not data else "data", "%.2f" % (time.monotonic() - start))
    except OSError as e:
        say("error", type(e).__name__, e.errno, "%.2f" % (time.monotonic() - start))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["silent", "http", "once"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(64)
    say("listening", srv.getsockname()[1])
    if a.mode == "once":
        once(srv)
        return
    handler = silent if a.mode == "silent" else http
    while True:
        conn, _ = srv.accept()
        say("accepted")
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
