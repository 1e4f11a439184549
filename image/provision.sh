#!/bin/sh
# Provision a Debian bookworm system as a pgappliance node: the one script shared by the container
# image (image/Dockerfile) and the VM template (packer/). Run as root. Idempotent (safe to run
# again), no systemd needed, POSIX sh (packer runs it with `sh -eux`).
#
#   provision.sh [all|system|deps|app]     (default: all)
#     system  the postgres user (uid/gid fixed BEFORE any package could create it), PostgreSQL 15,
#             HAProxy 2.6 and python3 from Debian bookworm, etcd 3.5 from Debian trixie (see
#             etcd_source), the appliance's directories
#     etcd-source  only the apt source and pin of etcd_source (scripts/setup uses it)
#     deps    the venv (from Debian's /usr/bin/python3) with the package's third-party dependencies, at
#             the versions constraints.txt (beside pyproject.toml) pins
#     app     the appliance package itself, /etc/pgappliance/appliance.yml, /usr/local/bin/appliance
#   The Dockerfile runs the phases separately so that a code change rebuilds only `app`.
#
# Parameters (environment):
#   PGAPPLIANCE_UID / PGAPPLIANCE_GID   postgres's uid/gid (999/999, as the official postgres image)
#   PGAPPLIANCE_VENV                    the venv (/opt/pgappliance/venv)
#   PGAPPLIANCE_SRC                     the source tree with pyproject.toml and constraints.txt (default:
#                                       this script's ../)
#   PGAPPLIANCE_PG_MAJOR                PostgreSQL major version (15)
#   PGAPPLIANCE_EXTRAS                  pip extras of the package, e.g. "dev" (none)
#   PGAPPLIANCE_WHEELS                  a directory of wheels: install the dependencies from it only
#                                       (offline). pip's own PIP_* variables work too (image/build.sh
#                                       passes PIP_FIND_LINKS/PIP_NO_INDEX to serve a host-side wheelhouse)
#   PGAPPLIANCE_KEEP_APT_LISTS=1        keep /var/lib/apt/lists (a VM may want them; images do not)
#   PGAPPLIANCE_SLIM=1                  container size: dpkg leaves out PostgreSQL's JIT (libLLVM, 130 MB;
#                                       PostgreSQL then runs without JIT, silently) and the locale sources
#                                       (C.UTF-8 and ICU collations still work); the venv gets no pip or
#                                       setuptools (Debian's pip wheel installs into it)
#
# On a VM with systemd, Debian's postinst enables etcd.service and haproxy.service; the appliance
# runs both under its own supervisord, so the VM-only step must `systemctl disable --now etcd haproxy`.
set -eu

PHASE=${1:-all}
UID_=${PGAPPLIANCE_UID:-999}
GID_=${PGAPPLIANCE_GID:-999}
VENV=${PGAPPLIANCE_VENV:-/opt/pgappliance/venv}
PG_MAJOR=${PGAPPLIANCE_PG_MAJOR:-15}
EXTRAS=${PGAPPLIANCE_EXTRAS:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${PGAPPLIANCE_SRC:-$(dirname "$HERE")}
export DEBIAN_FRONTEND=noninteractive

say() { echo "provision: $*"; }
die() { echo "provision: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"

create_user() {
    if ! getent group postgres >/dev/null; then
        groupadd --system --gid "$GID_" postgres
    fi
    if ! getent passwd postgres >/dev/null; then
        useradd --system --uid "$UID_" --gid postgres --home-dir /var/lib/postgresql --no-create-home \
            --shell /bin/bash --comment "PostgreSQL administrator" postgres
    fi
    actual=$(id -u postgres)
    [ "$actual" = "$UID_" ] || die "user postgres exists with uid $actual, not $UID_: set PGAPPLIANCE_UID=$actual or fix the user"
}

slim_excludes() {
    # dpkg's path-exclude (what slim images do for docs): packages stay installed and consistent
    # for apt, their files are not unpacked. PostgreSQL skips JIT when llvmjit.so is absent.
    cat >/etc/dpkg/dpkg.cfg.d/pgappliance-slim <<'EOF'
path-exclude /usr/lib/*/libLLVM-*.so*
path-exclude /usr/lib/llvm-*/*
path-exclude /usr/lib/*/libz3.so*
path-exclude /usr/lib/postgresql/*/lib/llvmjit*
path-exclude /usr/lib/postgresql/*/lib/bitcode/*
path-exclude /usr/share/i18n/locales/*
EOF
}

apt_install() {
    # No service may start while packages install: the appliance runs its own etcd and HAProxy.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "$@"
    rm -f /usr/sbin/policy-rc.d
}

etcd_source() {
    # bookworm's etcd 3.4.23 predates the fix for leases revoked by a stale etcd leader (etcd
    # PR #17465 in 3.4.31, #17425 in 3.5.13): its SIGCONT after a pause can delete the primary's
    # leader key and force a needless failover. Debian trixie's etcd 3.5.16 has the fix and needs
    # only libc6 >= 2.34 (bookworm has 2.36); the pin takes etcd-server/etcd-client from trixie and
    # nothing else (every other trixie package stays below bookworm's priority).
    cat >/etc/apt/sources.list.d/pgappliance-etcd.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >/etc/apt/preferences.d/pgappliance-etcd <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: etcd-server etcd-client
Pin: release n=trixie
Pin-Priority: 990
EOF
}

phase_system() {
    create_user
    etcd_source
    if [ "${PGAPPLIANCE_SLIM:-0}" = 1 ]; then slim_excludes; fi
    apt-get update -qq
    apt_install postgresql-common
    # Debian would create and start a "main" cluster with postgresql-$PG_MAJOR: the manager owns PGDATA.
    sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf
    apt_install "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" etcd-server etcd-client haproxy \
        python3 python3-venv
    install -d -o postgres -g postgres -m 0755 /var/lib/postgresql /run/pgappliance /etc/pgappliance/conf.d
    install -d -m 0755 /docker-entrypoint-initdb.d
    apt-get clean
    if [ "${PGAPPLIANCE_KEEP_APT_LISTS:-0}" != 1 ]; then
        rm -rf /var/lib/apt/lists/*
    fi
    say "system ready: $(/usr/lib/postgresql/"$PG_MAJOR"/bin/postgres --version), etcd $(etcd --version | head -1 | awk '{print $3}'), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
}

slim() { [ "${PGAPPLIANCE_SLIM:-0}" = 1 ]; }

debian_wheel() {
    # The newest of Debian's bundled wheels named $1 (python3-pip-whl, python3-setuptools-whl).
    for whl in /usr/share/python-wheels/"$1"-*.whl; do :; done
    [ -f "$whl" ] || die "no $1 wheel in /usr/share/python-wheels: install python3-venv"
    echo "$whl"
}

pip_() {
    # A slim venv has no pip of its own: Debian's pip wheel runs as is (it is a zip application).
    if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        set -- -m pip "$@"
    else
        set -- "$(debian_wheel pip)/pip" "$@"
    fi
    "$VENV/bin/python" "$@" --disable-pip-version-check --no-cache-dir --no-input
}

wheel_args() {
    if [ -n "${PGAPPLIANCE_WHEELS:-}" ]; then
        echo "--no-index --find-links $PGAPPLIANCE_WHEELS"
    fi
}

phase_deps() {
    [ -f "$SRC/pyproject.toml" ] || die "no pyproject.toml in $SRC: set PGAPPLIANCE_SRC"
    [ -f "$SRC/constraints.txt" ] || die "no constraints.txt in $SRC: it pins the dependencies (copy it beside pyproject.toml)"
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$(dirname "$VENV")"
        if slim; then /usr/bin/python3 -m venv --without-pip "$VENV"; else /usr/bin/python3 -m venv "$VENV"; fi
    fi
    if ! slim; then
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
    fi
    reqs=$(mktemp)
    "$VENV/bin/python" - "$SRC/pyproject.toml" "$EXTRAS" >"$reqs" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    deps += project.get("optional-dependencies", {}).get(extra, [])
print("\n".join(deps))
EOF
    # shellcheck disable=SC2046
    pip_ install -q $(wheel_args) -c "$SRC/constraints.txt" -r "$reqs"
    rm -f "$reqs"
    say "dependencies installed in $VENV"
}

phase_app() {
    [ -x "$VENV/bin/python" ] || phase_deps
    # Build from a clean copy: the source may be read-only, and a stale build/ in it would end up
    # in the wheel (setuptools builds in the tree).
    stage=$(mktemp -d)
    cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/appliance" "$stage/"
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    spec=$stage
    [ -n "$EXTRAS" ] && spec="${stage}[$EXTRAS]"
    # Built without isolation (offline): setuptools (Debian's wheel) and wheel (setuptools < 70.1
    # needs it), removed again in the same step on a slim install.
    # shellcheck disable=SC2046
    pip_ install -q $(wheel_args) "$(debian_wheel setuptools)" wheel
    pip_ install -q --no-deps --no-build-isolation --force-reinstall "$spec"
    rm -rf "$stage"
    if slim; then
        pip_ uninstall -q -y wheel setuptools
    fi
    pip_ check >/dev/null || pip_ check
    if [ ! -f /etc/pgappliance/appliance.yml ] && [ -f "$SRC/image/appliance.yml" ]; then
        install -m 0644 "$SRC/image/appliance.yml" /etc/pgappliance/appliance.yml
    fi
    # `appliance` on PATH. APPLIANCE_PEERS is the entrypoint's input, not a setting of the config layers.
    cat >/usr/local/bin/appliance <<EOF
#!/bin/sh
unset APPLIANCE_PEERS APPLIANCE_DEMO_INSECURE
exec "$VENV/bin/appliance" "\$@"
EOF
    chmod 755 /usr/local/bin/appliance
    chmod -R a+rX "$(dirname "$VENV")"
    say "appliance $("$VENV/bin/python" -c 'import appliance; print(appliance.__version__)') installed in $VENV"
}

case "$PHASE" in
    system) phase_system ;;
    etcd-source) etcd_source ;;
    deps) phase_deps ;;
    app) phase_app ;;
    all) phase_system; phase_deps; phase_app ;;
    *) die "unknown phase $PHASE: use all, system, deps or app" ;;
esac
