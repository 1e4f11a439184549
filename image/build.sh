#!/usr/bin/env bash
# Build the pgappliance image: the debian:bookworm-slim base first (pulled, or made from Debian's
# packages when no registry is reachable: image/build-base.sh), then image/Dockerfile.
#
# The Python dependencies come from a wheelhouse downloaded by this host's pip (cached in
# /var/cache/pgappliance/wheels) and served to the build over loopback: the build needs no PyPI
# access of its own (a TLS-intercepting proxy, for one, would make pip fail inside the build) and
# no wheel ends up in an image layer. Without a pip on the host, pip in the build uses PyPI.
#
# Env: PGAPPLIANCE_IMAGE (tag, default pgappliance:latest), DOCKER_BUILD_ARGS (extra arguments,
# e.g. "--no-cache"), PGAPPLIANCE_WHEELHOUSE=0 (no wheelhouse), PGAPPLIANCE_WHEEL_CACHE,
# PGAPPLIANCE_WHEEL_PORT (where the wheelhouse is served during the build, default 38799).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${PGAPPLIANCE_IMAGE:-pgappliance:latest}
WHEELS=${PGAPPLIANCE_WHEEL_CACHE:-/var/cache/pgappliance/wheels}
say() { echo "build: $*" >&2; }

image/build-base.sh

host_pip() {
    local py
    for py in python3 "${APPLIANCE_VENV:-/opt/pgappliance/venv}/bin/python"; do
        if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

wheelhouse() {
    local py reqs arch
    py=$(host_pip) || return 1
    mkdir -p "$WHEELS"
    reqs=$(mktemp)
    "$py" -c 'import sys, tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] + ["wheel"]))' \
        >"$reqs" 2>/dev/null || { rm -f "$reqs"; return 1; }
    arch=$(uname -m)
    # The image's interpreter: CPython 3.11 on glibc 2.36 (bookworm).
    "$py" -m pip download --quiet --disable-pip-version-check --dest "$WHEELS" --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
        --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
        --platform any -c constraints.txt -r "$reqs" >&2 || { rm -f "$reqs"; return 1; }
    rm -f "$reqs"
}

args=()
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; true; }
trap cleanup EXIT
if [ "${PGAPPLIANCE_WHEELHOUSE:-1}" != 0 ] && wheelhouse; then
    # A fixed port keeps the build argument, hence docker's layer cache, the same from build to build.
    port=$(python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "${PGAPPLIANCE_WHEEL_PORT:-38799}")
    python3 -m http.server --bind 127.0.0.1 --directory "$WHEELS" "$port" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
        sleep 0.1
    done
    say "serving the wheelhouse $WHEELS on 127.0.0.1:$port to the build"
    args+=(--network host --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg PIP_NO_INDEX=1)
else
    say "no wheelhouse: pip in the build downloads from PyPI"
fi

start=$(date +%s)
# shellcheck disable=SC2086
DOCKER_BUILDKIT=0 docker build --force-rm -f image/Dockerfile -t "$IMAGE" "${args[@]}" ${DOCKER_BUILD_ARGS:-} . >&2
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "$IMAGE built in $(($(date +%s) - start)) s: $((size / 1000000)) MB"
