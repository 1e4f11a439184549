#!/usr/bin/env bash
# Make debian:bookworm-slim available to `docker build` without an image registry: use the local
# image if present, else pull it, else import a cached root filesystem, else build one from
# Debian's packages (debootstrap --variant=minbase, trimmed the way the official slim image is).
#
# Env: BASE_IMAGE (default debian:bookworm-slim), DEBIAN_MIRROR (default: the bookworm URI of this
# host's apt sources, else http://deb.debian.org/debian), APPLIANCE_BASE_CACHE (the rootfs tarball,
# default /var/cache/pgappliance/bookworm-slim-rootfs.tar.gz), BASE_PULL=0 to skip `docker pull`.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
CACHE=${APPLIANCE_BASE_CACHE:-/var/cache/pgappliance/bookworm-slim-rootfs.tar.gz}
SUITE=bookworm

say() { echo "build-base: $*" >&2; }

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE is present"
    exit 0
fi
if [ "${BASE_PULL:-1}" != 0 ] && timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "pulled $BASE_IMAGE"
    exit 0
fi

import_cache() {
    say "importing $CACHE as $BASE_IMAGE"
    docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$CACHE" "$BASE_IMAGE" >/dev/null
}
if [ -s "$CACHE" ]; then
    import_cache
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    say "no registry and no cached root filesystem ($CACHE): run this script as root to debootstrap one"
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

host_mirror() {
    # The first http(s) URI this host's apt uses for bookworm itself (not -security, not third parties).
    local uri
    uri=$(grep -hs -A3 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {u=$2} /^Suites:/ && u ~ /\/debian\/?$/ && / bookworm( |$)/ {print u; exit}')
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}

WORK=$(mktemp -d /var/tmp/pgappliance-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
say "debootstrap $SUITE from $MIRROR (a few minutes)"
debootstrap --variant=minbase --arch="$(dpkg --print-architecture)" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }

# What the official slim image does: no docs, man pages or translations, now or in later installs.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*

# apt inside containers: no cached .debs or package indexes left behind, no translations.
cat >"$ROOT/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$ROOT/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$ROOT/etc/apt/apt.conf.d/docker-gzip-indexes"
printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$ROOT/etc/apt/apt.conf.d/docker-autoremove-suggests"

rm -f "$ROOT/etc/apt/sources.list"
cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/tmp/* \
    "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old
: >"$ROOT/etc/machine-id"
echo "$SUITE" >"$ROOT/etc/hostname"

mkdir -p "$(dirname "$CACHE")"
tar --numeric-owner --xattrs -C "$ROOT" -czf "$CACHE.tmp" .
mv "$CACHE.tmp" "$CACHE"
say "cached the root filesystem in $CACHE ($(du -h "$CACHE" | cut -f1))"
import_cache
