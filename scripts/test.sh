#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests drive (curl, wget,
# iproute2, gcc, python3 requests) when it is missing, then `cargo test` over the workspace.
# Arguments are passed on to cargo test (for example a test name).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v wget >/dev/null || missing+=(wget)
command -v ip >/dev/null && command -v ss >/dev/null || missing+=(iproute2)
# gcc builds the tests' C programs, one of them static (libc.a is in libc6-dev); nm is binutils.
if ! echo 'int main(void){return 0;}' | gcc -static -x c - -o /dev/null 2>/dev/null \
    || ! command -v nm >/dev/null; then
    missing+=(gcc libc6-dev binutils)
fi
command -v python3 >/dev/null || missing+=(python3 python3-pip)
# PHP loads its curl extension with RTLD_DEEPBIND (tests/deepbind.rs). grep without -q reads
# all of php -m, which pipefail would otherwise fail on SIGPIPE.
command -v php >/dev/null && php -m 2>/dev/null | grep -x curl >/dev/null || missing+=(php-cli php-curl)
# Real clients that choose their own keepalive (tests/never_worse.rs).
command -v node >/dev/null || missing+=(nodejs)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v psql >/dev/null || missing+=(postgresql-client)
# The stress suites (tests/stress_*.rs): memcheck over C clients and Debian's python3 (which runs
# clean under valgrind, unlike a pyenv build); redis-benchmark comes with redis-tools.
command -v valgrind >/dev/null || missing+=(valgrind)
[ -x /usr/bin/python3 ] || missing+=(python3)
# The seccomp supervisor's tests (cli/tests/supervise.rs): a Go client built there with
# Debian's Go, and Debian's statically linked busybox.
command -v go >/dev/null || missing+=(golang-go)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# A real Prometheus scrapes `keepalive-shim metrics` (cli/tests/metrics.rs).
command -v prometheus >/dev/null || missing+=(prometheus)
# The supervisor's identity proofs (cli/tests/supervise_trace.rs): an owner-match rule, setpriv.
command -v iptables >/dev/null || missing+=(iptables)
command -v setpriv >/dev/null || missing+=(util-linux)
# The image's readers (tests/image.rs): skopeo pushes it to Debian's docker-registry, which the
# test runs itself on loopback (the package's own service is not used).
command -v skopeo >/dev/null || missing+=(skopeo)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: the tests need: ${missing[*]} (install them, or run as root)" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import requests' 2>/dev/null; then
    echo "test.sh: installing python3 requests"
    python3 -m pip install --quiet requests 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages requests
fi

scripts/dist.sh # the release artifacts, checked by tests/portable.rs (and the tools it uses)
exec cargo test --workspace "$@"
