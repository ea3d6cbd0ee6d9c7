#!/usr/bin/env python3
"""A test client: what a real tool does, with requests and no timeout. Prints `result NAME
SECONDS` when its blocking call ends (NAME is `ok` or the exception's class), flushed.

  get URL        requests.get(url), no timeout: waits for an answer
  session URL    a requests.Session: one GET, prints `first-done`, waits for a line on stdin,
                 then a second GET on the same pooled keep-alive connection
  hold HOST:PORT...
                 plain sockets: connects to each, prints `connected`, then waits forever
"""

import socket
import sys
import time

import requests


def result(start, outcome):
    print("result", outcome, "%.2f" % (time.monotonic() - start), flush=True)


def timed_get(session, url):
    start = time.monotonic()
    try:
        session.get(url)
        result(start, "ok")
    except requests.exceptions.RequestException as e:
        result(start, type(e).__name__)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "get":
        timed_get(requests, args[0])
    elif mode == "session":
        s = requests.Session()
        s.get(args[0]).raise_for_status()
        print("first-done", flush=True)
        sys.stdin.readline()
        timed_get(s, args[0])
    elif mode == "hold":
        held = []
        for target in args:
            host, port = target.rsplit(":", 1)
            held.append(socket.create_connection((host.strip("[]"), int(port))))
        print("connected", flush=True)
        time.sleep(3600)


if __name__ == "__main__":
    main()
