#!/usr/bin/env python3
"""A test server. Prints `listening PORT`, then `accepted` and `request` as they happen, flushed,
so a test can act at the right moment.

  --mode silent   reads each request and never answers (a hung service)
  --mode http     answers every request with a small HTTP/1.1 keep-alive response
  --mode once     accepts one client, waits for data, prints how the wait ended, exits

With --mode once and --own-keepalive IDLE,INTERVAL,COUNT the server, like one that sets its own
keepalive on the sockets it accepts, prints `accepted`, sleeps --settle SECONDS (a test cuts the
client's link meanwhile), sets SO_KEEPALIVE 1 and the three values on the accepted socket, prints
`set`, then `user_timeout MS` (the socket's TCP_USER_TIMEOUT, read back right after), and then
waits for data; the seconds it prints are counted from `set`.
"""

import argparse
import socket
import sys
import threading
import time


SAY = threading.Lock()


def say(*words):
    # One whole line per write, under a lock: print() from two threads writes the text and the
    # newline separately, and two connections arriving together gave "requestrequest" (one line
    # where a test waits for two).
    with SAY:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


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


def own_keepalive(conn, values):
    idle, interval, count = values
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


def once(srv, keepalive=None, settle=0.0):
    conn, _ = srv.accept()
    say("accepted")
    start = time.monotonic()
    if keepalive is not None:
        time.sleep(settle)
        own_keepalive(conn, keepalive)
        start = time.monotonic()
        say("set")
        say("user_timeout", conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
    try:
        data = conn.recv(65536)
        say("closed" if not data else "data", "%.2f" % (time.monotonic() - start))
    except OSError as e:
        say("error", type(e).__name__, e.errno, "%.2f" % (time.monotonic() - start))


def three_ints(text):
    values = [int(v) for v in text.split(",")]
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError("IDLE,INTERVAL,COUNT: three positive integers")
    return values


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["silent", "http", "once"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--own-keepalive", metavar="IDLE,INTERVAL,COUNT", type=three_ints,
                   help="--mode once: set these on the accepted socket after --settle seconds")
    p.add_argument("--settle", type=float, default=0.0,
                   help="--mode once with --own-keepalive: seconds between accept and setting")
    a = p.parse_args()
    if a.own_keepalive is not None and a.mode != "once":
        p.error("--own-keepalive needs --mode once")
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(64)
    say("listening", srv.getsockname()[1])
    if a.mode == "once":
        once(srv, a.own_keepalive, a.settle)
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
