#!/usr/bin/env python3
"""The seed client's own connection: requests.get(url, no timeout) the way a real tool calls it,
then the five options of the TCP socket requests connected, read back with getsockopt and printed
as one JSON object (the format of probe.py). Runs on Python 3.9 and later, in chroots and
containers (needs no /proc).

  requests_options.py URL   get URL (a server elsewhere)
  requests_options.py       get from an HTTP server of its own on 127.0.0.1, in a thread
"""

import http.server
import json
import os
import socket
import stat
import sys
import threading
import urllib.parse

import requests

from probe import read


class Ok(http.server.BaseHTTPRequestHandler):
    """One response per connection (HTTP/1.0), then the server closes it."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def connected_to(host, port):
    """The options of the open TCP socket whose peer is host:port (requests keeps it open while
    a streamed response is unread)."""
    for fd in range(3, 1024):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
        except OSError:
            continue
        sock = socket.socket(fileno=os.dup(fd))
        try:
            if sock.type == socket.SOCK_STREAM and sock.getpeername()[:2] == (host, port):
                return read(sock)
        except OSError:
            pass
        finally:
            sock.close()
    raise SystemExit("no socket connected to %s:%d" % (host, port))


def main():
    server = None
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
        threading.Thread(target=server.serve_forever).start()
        url = "http://127.0.0.1:%d/" % server.server_address[1]
    response = requests.get(url, stream=True)
    response.raise_for_status()
    parts = urllib.parse.urlsplit(url)
    options = connected_to(socket.gethostbyname(parts.hostname), parts.port or 80)
    # A clean end on both sides: the body read (an unread one makes the close a reset), the
    # connection closed, the server stopped once its request is handled.
    response.content
    response.close()
    if server:
        server.shutdown()
        server.server_close()
    print(json.dumps(options, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
