#!/bin/sh
# VM-only steps of the pgappliance image, around image/provision.sh (which the container shares and
# which assumes no systemd). Run as root inside the build VM; idempotent; POSIX sh.
#
#   vm.sh prepare     grow the root filesystem to the disk; wait for a cloud image's first cloud-init;
#                     the postgres user (uid/gid 999 when free)
#   vm.sh configure   the systemd unit (the container's entrypoint with EnvironmentFile=), its
#                     wrapper, the env file template, softdog at boot; Debian's own
#                     etcd/haproxy/postgresql units off
#   vm.sh seal        make the disk a template: no build user key, SSH host keys, machine-id,
#                     cloud-init state, caches or staging files left; free blocks trimmed
#
# Files come from ../files beside this script (PGAPPLIANCE_VM_FILES overrides).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
FILES=${PGAPPLIANCE_VM_FILES:-$(dirname "$HERE")/files}
STAGE=${PGAPPLIANCE_STAGE:-/tmp/pgappliance}
UNIT=/etc/systemd/system/pgappliance.service
export DEBIAN_FRONTEND=noninteractive

say() { echo "vm.sh: $*"; }
die() { echo "vm.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"

grow_root() {
    src=$(findmnt -no SOURCE /)
    name=$(basename "$src")
    if [ ! -e "/sys/class/block/$name/partition" ]; then
        say "root $src is not a partition: nothing to grow"
        return 0
    fi
    if ! command -v growpart >/dev/null; then
        say "no growpart (cloud-guest-utils): the root filesystem keeps its size"
        return 0
    fi
    disk=/dev/$(lsblk -no PKNAME "$src")
    part=$(cat "/sys/class/block/$name/partition")
    # growpart exits 1 with NOCHANGE when the partition already fills the disk.
    if out=$(growpart "$disk" "$part" 2>&1); then
        say "$out"
    elif ! echo "$out" | grep -q NOCHANGE; then
        die "growpart $disk $part failed: $out"
    fi
    resize2fs "$src" >/dev/null 2>&1 || say "resize2fs $src: not ext2/3/4 or nothing to do"
    say "root filesystem: $(df -h --output=size / | tail -1 | tr -d ' ')"
}

postgres_user() {
    # image/provision.sh wants uid/gid 999 (the container's, as the official postgres image), but
    # on a VM systemd may have given gid 999 to systemd-journal: then postgres gets free system ids
    # here, and the template passes `id -u/-g postgres` to provision.sh.
    getent passwd postgres >/dev/null && return 0
    if ! getent group postgres >/dev/null; then
        if getent group 999 >/dev/null; then groupadd --system postgres; else groupadd --system --gid 999 postgres; fi
    fi
    uid_opt=""
    getent passwd 999 >/dev/null || uid_opt="--uid 999"
    # shellcheck disable=SC2086
    useradd --system $uid_opt --gid postgres --home-dir /var/lib/postgresql --no-create-home --shell /bin/bash \
        --comment "PostgreSQL administrator" postgres
    say "user postgres: uid $(id -u postgres), gid $(id -g postgres)"
}

phase_prepare() {
    if command -v cloud-init >/dev/null; then
        # A cloud image's first boot may still be running cloud-init (apt, users) when SSH answers.
        cloud-init status --wait >/dev/null 2>&1 || true
    fi
    grow_root
    postgres_user
}

phase_configure() {
    [ -x /opt/pgappliance/venv/bin/python ] || die "run image/provision.sh first: no /opt/pgappliance/venv"
    [ -f "$FILES/pgappliance.service" ] || die "no $FILES/pgappliance.service: set PGAPPLIANCE_VM_FILES"
    install -d -m 0755 /usr/local/lib/pgappliance /etc/pgappliance
    install -m 0755 "$FILES/vm-run" /usr/local/lib/pgappliance/vm-run
    install -m 0644 "$FILES/pgappliance.service" "$UNIT"
    install -m 0644 "$FILES/appliance.env.example" /etc/pgappliance/appliance.env.example
    install -d -m 0700 /etc/pgappliance/secrets
    # The appliance runs its own etcd and HAProxy under supervisord; Debian's postinst enabled
    # theirs. Masked, so that neither a package upgrade nor a first-boot preset brings them back.
    systemctl disable --now etcd.service haproxy.service postgresql.service >/dev/null 2>&1 || true
    systemctl mask etcd.service haproxy.service >/dev/null
    # The fencer's watchdog (docs/fencing.md): softdog at every boot; the entrypoint (root) hands
    # /dev/watchdog to postgres before supervisord drops privileges.
    echo softdog >/etc/modules-load.d/pgappliance-watchdog.conf
    modprobe softdog 2>/dev/null || say "softdog not loaded now (it loads at the next boot)"
    systemctl daemon-reload
    systemctl enable pgappliance.service >/dev/null 2>&1
    say "pgappliance.service enabled; it starts once /etc/pgappliance/appliance.env exists"
}

remove_build_login() {
    # The build user's key lives on the build host: the image must not accept it. The account stays
    # (locked) so that this running session can finish; packer's shutdown reuses its connection.
    user=${SUDO_USER:-}
    if [ -n "$user" ] && [ "$user" != root ]; then
        home=$(getent passwd "$user" | cut -d: -f6)
        rm -f "$home/.ssh/authorized_keys"
        usermod --lock "$user"
        say "build user $user: key removed, password locked"
    fi
}

phase_seal() {
    if command -v cloud-init >/dev/null; then
        cloud-init clean --logs >/dev/null 2>&1 || true
    fi
    # Every VM made from this disk makes its own SSH host keys and machine-id at first boot.
    install -d /etc/systemd/system/ssh.service.d
    # Before Debian's own `sshd -t`, which fails without keys.
    printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
        >/etc/systemd/system/ssh.service.d/10-host-keys.conf
    rm -f /etc/ssh/ssh_host_*
    : >/etc/machine-id
    rm -f /var/lib/dbus/machine-id
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/tmp/* /root/.cache "$STAGE"
    if journalctl --rotate >/dev/null 2>&1; then
        journalctl --vacuum-time=1s >/dev/null 2>&1 || true
    fi
    remove_build_login
    fstrim -v / 2>/dev/null || say "fstrim: not supported by this disk (the image stays larger)"
}

case "${1:-}" in
    prepare) phase_prepare ;;
    configure) phase_configure ;;
    seal) phase_seal ;;
    *) die "usage: vm.sh prepare|configure|seal" ;;
esac
