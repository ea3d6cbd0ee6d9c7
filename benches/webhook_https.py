#!/usr/bin/env python3
"""The admission webhook's cost end to end, as the API server meets it: HTTPS requests on one
keep-alive connection (TLS verified against the CA `webhook certs` made, under the Service's
name), rounds alternating a block of reviews (`POST /mutate` with an AdmissionReview) with a
block of the baseline, `GET /healthz` on the same connection (the same TLS, HTTP and client
work, no review). Run by scripts/bench-webhook.sh.

  webhook_https.py PORT CA HOST BODY ROUNDS PER_ROUND

Prints one JSON object: the medians over rounds of the microseconds per review and per
baseline request, of their difference, and of their ratio with its interquartile range.
"""

import http.client
import json
import socket
import ssl
import statistics
import sys
import time


def main():
    port, ca, host, body_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    rounds, per_round = int(sys.argv[5]), int(sys.argv[6])
    body = open(body_file, "rb").read()
    context = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = http.client.HTTPSConnection(host, port, context=context)
    conn.sock = context.wrap_socket(raw, server_hostname=host)
    headers = {"Content-Type": "application/json"}

    def review():
        conn.request("POST", "/mutate", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200 or b'"allowed":true' not in answer:
            raise SystemExit("POST /mutate: %d %r" % (response.status, answer[:200]))

    def baseline():
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit("GET /healthz: %d %r" % (response.status, answer[:200]))

    def block(call):
        start = time.perf_counter_ns()
        for _ in range(per_round):
            call()
        return (time.perf_counter_ns() - start) / per_round / 1000.0

    for _ in range(per_round):  # warm up both paths
        review()
        baseline()
    ours, base, ratios, differences = [], [], [], []
    for n in range(rounds):
        # Alternate which goes first, so neither always follows the other.
        if n % 2 == 0:
            r = block(review)
            b = block(baseline)
        else:
            b = block(baseline)
            r = block(review)
        ours.append(r)
        base.append(b)
        ratios.append(r / b)
        differences.append(r - b)
    quartiles = statistics.quantiles(ratios, n=4)
    print(
        json.dumps(
            {
                "review_us": statistics.median(ours),
                "baseline_us": statistics.median(base),
                "difference_us": statistics.median(differences),
                "ratio": statistics.median(ratios),
                "ratio_iqr": [quartiles[0], quartiles[2]],
                "requests": 2 * rounds * per_round,
            }
        )
    )


if __name__ == "__main__":
    main()
