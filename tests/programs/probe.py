#!/usr/bin/env python3
"""A test program: makes sockets the way real programs do, reads their options back with
getsockopt, and prints what it saw as one JSON object. The integration tests run it with and
without the library preloaded and compare."""

import ctypes
import errno
import json
import os
import socket
import sys

TCP = socket.IPPROTO_TCP
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
OPTIONS = [
    ("keepalive", socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    ("idle", TCP, socket.TCP_KEEPIDLE),
    ("interval", TCP, socket.TCP_KEEPINTVL),
    ("count", TCP, socket.TCP_KEEPCNT),
    ("user_timeout", TCP, TCP_USER_TIMEOUT),
]


def read(sock):
    """The five options, or the errno name where the socket has no such option."""
    out = {}
    for name, level, opt in OPTIONS:
        try:
            out[name] = sock.getsockopt(level, opt)
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
    return out


def listener(family=socket.AF_INET):
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(16)
    return srv


def sockets():
    """Every kind of socket a program makes, read after socket() and after connect()."""
    out = {}
    srv4, srv6 = listener(), listener(socket.AF_INET6)
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    out["ipv4"] = read(plain)
    plain.connect(srv4.getsockname())
    out["ipv4_connected"] = read(plain)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    out["ipv6_nonblock"] = read(v6)
    explicit = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    out["explicit_tcp"] = read(explicit)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out["udp"] = read(udp)
    udp.connect(srv4.getsockname())
    out["udp_connected"] = read(udp)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out["unix"] = read(unix)
    accepted, _ = srv4.accept()
    out["accepted"] = read(accepted)
    out["listener"] = read(srv6)
    return out


def own_options():
    """A program that sets its own keepalive before connect() (like curl) and after it (like
    Node), printing what each setsockopt returned and what stayed in effect."""
    srv = listener()
    s = socket.socket()
    before = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (TCP, socket.TCP_KEEPIDLE, 100),
              (TCP, socket.TCP_KEEPINTVL, 20), (TCP, socket.TCP_KEEPCNT, 5),
              (TCP, TCP_USER_TIMEOUT, 1234)]
    for level, opt, value in before:
        s.setsockopt(level, opt, value)
    out = {"before_connect": read(s)}
    s.connect(srv.getsockname())
    out["after_connect"] = read(s)
    s.setsockopt(TCP, socket.TCP_KEEPIDLE, 1)
    out["after_own_idle_1"] = read(s)
    try:
        s.setsockopt(TCP, socket.TCP_KEEPIDLE, 0)
        out["invalid_own_idle"] = "accepted"
    except OSError as e:
        out["invalid_own_idle"] = errno.errorcode[e.errno]
    return out


def own_keepalive():
    """Programs that choose their own keepalive: Node's libuv after connect() (keepalive on,
    idle 1 s, interval 1 s, count 10), one that sets only its idle time before connect(), and
    one that also sets its own user timeout."""
    srv = listener()
    node = socket.socket()
    node.connect(srv.getsockname())
    for level, opt, value in [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                              (TCP, socket.TCP_KEEPIDLE, 1), (TCP, socket.TCP_KEEPINTVL, 1),
                              (TCP, socket.TCP_KEEPCNT, 10)]:
        node.setsockopt(level, opt, value)
    idle_only = socket.socket()
    idle_only.setsockopt(TCP, socket.TCP_KEEPIDLE, 5)
    idle_only.connect(srv.getsockname())
    own_timeout = socket.socket()
    own_timeout.setsockopt(TCP, TCP_USER_TIMEOUT, 1234)
    own_timeout.connect(srv.getsockname())
    own_timeout.setsockopt(TCP, socket.TCP_KEEPIDLE, 1)
    return {"node": read(node), "idle_only": read(idle_only), "own_timeout": read(own_timeout)}


def opt_out():
    """A program that turns keepalive off on its socket."""
    srv = listener()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    s.connect(srv.getsockname())
    return {"after_connect": read(s)}


def raw_syscall():
    """A TCP socket made with syscall(SYS_socket), which no socket() hook sees."""
    libc = ctypes.CDLL(None, use_errno=True)
    sys_socket = 41  # x86_64
    fd = libc.syscall(sys_socket, socket.AF_INET, socket.SOCK_STREAM, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "syscall(SYS_socket)")
    s = socket.socket(fileno=fd)
    out = {"before_connect": read(s)}
    srv = listener()
    s.connect(srv.getsockname())
    out["after_connect"] = read(s)
    return out


def nonblocking_connect():
    """connect() on a non-blocking socket must still report EINPROGRESS, and connecting a
    closed port ECONNREFUSED."""
    srv = listener()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    rc = s.connect_ex(srv.getsockname())
    closed = socket.socket()
    port = closed_port()
    refused = closed.connect_ex(("127.0.0.1", port))
    return {"nonblocking": errno.errorcode.get(rc, rc), "refused": errno.errorcode.get(refused, refused)}


def closed_port():
    tmp = socket.socket()
    tmp.bind(("127.0.0.1", 0))
    port = tmp.getsockname()[1]
    tmp.close()
    return port


def echo():
    """A program with a known stdout and exit status, and one TCP socket."""
    s = socket.socket()
    print("stdout of the program", read(s)["keepalive"] in (0, 1))
    sys.stdout.flush()
    os._exit(3)


CASES = {
    "sockets": sockets,
    "own-options": own_options,
    "own-keepalive": own_keepalive,
    "opt-out": opt_out,
    "raw-syscall": raw_syscall,
    "nonblocking-connect": nonblocking_connect,
}

if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo()
    print(json.dumps(CASES[sys.argv[1]](), sort_keys=True))
