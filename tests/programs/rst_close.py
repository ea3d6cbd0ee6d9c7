"""rst_close.py N: N times, a client with SO_LINGER {1, 0} connects to a loopback listener of its
own and closes; right after close() returns, the accepted side must already see the reset. Prints
{"n": N, "late": L} (for cli/tests/supervise_trace.rs, bare and under the seccomp supervisor)."""
import json
import socket
import struct
import sys

n = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(128)
late = 0
for _ in range(n):
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.connect(listener.getsockname())
    a, _ = listener.accept()
    c.close()
    try:
        a.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        late += 1
    except ConnectionResetError:
        pass
    except BlockingIOError:
        late += 1
    a.close()
print(json.dumps({"n": n, "late": late}))
