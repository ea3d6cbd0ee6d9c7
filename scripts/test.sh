#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests drive (curl, wget,
# iproute2, gcc, python3 and requests, Docker, ...) when it is missing, then `cargo test` over the
# workspace. Every test binary runs, also after one fails; the run fails at the end, and cargo's
# last lines name the binaries that failed. Arguments are passed on to cargo test (for example a
# test name).
#
# On a minimal Debian 12 (debootstrap minbase) the installs of this script, scripts/dist.sh,
# scripts/rootfs.sh and scripts/dockerd.sh come to about 490 packages (535 MB downloaded, 2.3 GB
# on disk; `apt-get -s` against that system's package list), and the caches under target/ (the
# builds, a Debian bullseye tree, a Docker data root) to about 2.5 GB: run it in a VM or a
# container of its own, as root. apt waits up to 10 minutes for another package manager's lock.
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
command -v python3 >/dev/null || missing+=(python3)
# requests, the one Python module the tests use that is not in the standard library: Debian's
# package where python3 is Debian's (whose pip, when there is one, refuses to install into it).
if ! python3 -c 'import requests' 2>/dev/null \
    && { ! command -v python3 >/dev/null || [ "$(command -v python3)" = /usr/bin/python3 ]; }; then
    missing+=(python3-requests)
fi
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
# kubernetes-validate (PyPI only) checks manifests and mutated pods against Kubernetes' schemas
# (crates/kube/tests, cli/tests/webhook.rs); Debian's python3 needs Debian's pip to install it.
if ! command -v kubernetes-validate >/dev/null && ! python3 -m pip --version >/dev/null 2>&1 \
    && { ! command -v python3 >/dev/null || [ "$(command -v python3)" = /usr/bin/python3 ]; }; then
    missing+=(python3-pip)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: the tests need: ${missing[*]} (install them, or run as root)" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}"
    # Waits for another apt or dpkg (unattended-upgrades on a fresh VM) instead of failing.
    apt-get update -qq -o DPkg::Lock::Timeout=600
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import requests' 2>/dev/null; then
    # A python3 that is not Debian's (pyenv, a virtual environment): its own pip.
    python=$(command -v python3)
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "test.sh: $python cannot import requests and has no pip: install requests for it," \
            "or put Debian's /usr/bin/python3 (apt-get install python3-requests) first on PATH" >&2
        exit 1
    fi
    echo "test.sh: installing requests for $python with its pip"
    python3 -m pip install --quiet requests
fi

if ! command -v kubernetes-validate >/dev/null; then
    # Into Debian's python3 only with --break-system-packages (PEP 668 marks it externally
    # managed); into another python3 (pyenv, a virtual environment) with its own pip.
    echo "test.sh: installing kubernetes-validate for $(command -v python3) with its pip"
    python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages kubernetes-validate
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    command -v kubernetes-validate >/dev/null || {
        echo "test.sh: kubernetes-validate was installed but is not on PATH" >&2
        exit 1
    }
fi

scripts/dist.sh # the release artifacts, checked by tests/portable.rs (and the tools it uses)
# --no-fail-fast: every test binary runs; cargo then exits non-zero and lists the failed ones.
exec cargo test --workspace --no-fail-fast "$@"
