#!/bin/sh
# Installs everything mesh-worker needs to build, run and test on Debian 12:
# compilers (clang and its runtime for the libFuzzer targets), clang-format
# (scripts/check-format.sh), -dev packages, the PostgreSQL server binaries
# (the worker and the tests start their own private clusters with
# initdb/pg_ctl, so Debian's default cluster may stay stopped or absent),
# the Python packages the integration tests import, a JDK with Maven for
# the real-broker tests (openssl makes the secured broker's test
# certificates), and Prometheus for promtool, which checks and unit-tests
# the alerting rules.
#
# Safe to re-run: when every package is already installed it does nothing
# and does not touch the network.  Run as root, or as a user with sudo.
#
# Usage: scripts/install-deps.sh [--check]
#   --check  only report missing packages; exit 1 if any is missing.
set -eu

PACKAGES="
build-essential
clang
libclang-rt-14-dev
clang-format
cmake
pkg-config
librdkafka-dev
libavro-dev
libpq-dev
libcurl4-openssl-dev
libjansson-dev
uuid-dev
libidn2-dev
libssl-dev
libmicrohttpd-dev
libcmocka-dev
postgresql
python3
python3-pytest
python3-confluent-kafka
python3-psycopg2
python3-avro
python3-yaml
default-jdk-headless
maven
prometheus
openssl
"

check_only=false
case "${1:-}" in
    --check) check_only=true ;;
    -h|--help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *)
        echo "install-deps.sh: unknown argument: $1" >&2
        exit 2
        ;;
esac

# Prints the packages that dpkg does not report as fully installed.
missing_packages()
{
    for pkg in $PACKAGES; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null \
                 || true)
        case "$status" in
            ii*) ;;
            *) echo "$pkg" ;;
        esac
    done
}

if ! command -v dpkg-query >/dev/null 2>&1 \
   || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps.sh: cannot install packages: dpkg/apt-get not found" >&2
    echo "This script supports Debian 12 (bookworm) only." >&2
    exit 1
fi

missing=$(missing_packages)
if [ -z "$missing" ]; then
    echo "install-deps.sh: all packages already installed"
    exit 0
fi

if $check_only; then
    echo "install-deps.sh: missing packages:" $missing >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps.sh: cannot install packages: not root and sudo not found" >&2
    echo "Run it as root, or install:" $missing >&2
    exit 1
fi

echo "install-deps.sh: installing:" $missing
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
# Everything in one transaction: apt resolves the set together and a failure
# leaves nothing half-configured that a re-run would not finish.
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends $missing

# The private clusters need initdb and pg_ctl from the server package, not
# a running service; say so if they are not where the worker looks.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "install-deps.sh: PostgreSQL installed but initdb not found" \
         "under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi

missing=$(missing_packages)
if [ -n "$missing" ]; then
    echo "install-deps.sh: still missing after install:" $missing >&2
    exit 1
fi
echo "install-deps.sh: done"
