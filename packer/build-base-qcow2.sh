#!/usr/bin/env bash
# Build a bootable Debian bookworm base disk (qcow2) from Debian's packages, to feed packer/ where no
# cloud image can be downloaded. A real cloud image (Debian's genericcloud qcow2) works in its place.
#
#   packer/build-base-qcow2.sh [--force]          (as root; a few minutes; idempotent: a cached image is kept)
#
# What the disk holds: one MBR partition, ext4, extlinux; a minbase debootstrap plus linux-image-amd64,
# systemd, udev, openssh-server, sudo, systemd-networkd (DHCP on every en*/eth* link) with
# systemd-resolved, systemd-timesyncd, cloud-init (NoCloud only, so that a seed ISO labelled "cidata"
# can write /etc/pgappliance/appliance.env) and growpart. The build user (BUILD_USER, default
# "packer") logs in with a generated ed25519 key only and has password-less sudo; packer/scripts/vm.sh
# removes its key when the appliance image is sealed.
#
# Output (BASE_OUT_DIR, default /var/cache/pgappliance/vm):
#   debian-bookworm-base.qcow2      the disk          debian-bookworm-base.qcow2.sha256  its checksum
#   build_ed25519(.pub)             the build key     base.pkrvars.hcl   -var-file for `packer build`
#
# Env: BASE_OUT_DIR, BASE_SIZE (virtual size, default 3G: the appliance fits; packer's disk_size
# grows it), DEBIAN_MIRROR (default: this host's bookworm apt source, else deb.debian.org), BUILD_USER.
# Needs: debootstrap, sfdisk (fdisk), mkfs.ext4, losetup, extlinux + syslinux-common, qemu-img,
# ssh-keygen: missing ones are installed with apt-get. Loop devices with an offset: no nbd, no udev.
set -euo pipefail

OUT=${BASE_OUT_DIR:-/var/cache/pgappliance/vm}
SIZE=${BASE_SIZE:-3G}
USER_=${BUILD_USER:-packer}
SUITE=bookworm
NAME=debian-$SUITE-base.qcow2
# The partition starts at 1 MiB: the MBR plus room, as every partitioning tool does today.
OFFSET=$((2048 * 512))
# Installed with apt inside the debootstrapped minbase (apt resolves dependencies; debootstrap's
# --include does not reliably).
PACKAGES=(linux-image-amd64 systemd-sysv udev kmod dbus openssh-server sudo systemd-resolved systemd-timesyncd
    iproute2 netbase ca-certificates procps less cloud-init cloud-guest-utils fdisk e2fsprogs)

say() { echo "build-base-qcow2: $*" >&2; }
die() { say "$*"; exit 1; }

FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, loop devices, mount)"
if [ -s "$OUT/$NAME" ] && [ -s "$OUT/base.pkrvars.hcl" ] && [ "$FORCE" = 0 ]; then
    say "$OUT/$NAME exists (--force rebuilds it)"
    exit 0
fi

need_tools() {
    local missing=() pair
    for pair in debootstrap:debootstrap sfdisk:fdisk mkfs.ext4:e2fsprogs losetup:mount extlinux:extlinux \
        qemu-img:qemu-utils ssh-keygen:openssh-client; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    [ -f /usr/lib/syslinux/mbr/mbr.bin ] || missing+=(syslinux-common)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

host_mirror() {
    # The first URI this host's apt uses for bookworm itself (not -security, not third parties).
    local uri
    uri=$(grep -hs -A3 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {u=$2} /^Suites:/ && u ~ /\/debian\/?$/ && / bookworm( |$)/ {print u; exit}')
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

WORK=
LOOP=
ROOT=
cleanup() {
    set +e
    if [ -n "$ROOT" ]; then
        for m in var/cache/apt/archives dev/pts dev proc sys; do
            mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"
        done
        mountpoint -q "$ROOT" && umount "$ROOT"
    fi
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    if [ -n "$WORK" ]; then
        [ -f "$WORK/build.log" ] && cp "$WORK/build.log" "$OUT/last-build.log" 2>/dev/null
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

make_disk() {
    truncate -s "$SIZE" "$WORK/disk.raw"
    printf 'label: dos\nstart=%s, type=83, bootable\n' "$((OFFSET / 512))" | sfdisk -q "$WORK/disk.raw"
    LOOP=$(losetup --find --show --offset "$OFFSET" "$WORK/disk.raw")
    UUID=$(cat /proc/sys/kernel/random/uuid)
    # No 64bit feature: extlinux (syslinux 6.04) cannot read ext4 filesystems that have it.
    mkfs.ext4 -q -L root -U "$UUID" -O ^64bit "$LOOP"
    ROOT=$WORK/root
    mkdir -p "$ROOT"
    mount "$LOOP" "$ROOT"
}

log_or_die() {
    "$@" >>"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; die "failed: $* (log: $OUT/last-build.log)"; }
}

bootstrap() {
    local mirror=$1
    # Downloaded packages are kept: a rebuild needs the network only for what changed.
    mkdir -p "$OUT/debs"
    say "debootstrap $SUITE from $mirror, then ${#PACKAGES[@]} packages (a few minutes)"
    log_or_die debootstrap --variant=minbase --arch=amd64 --cache-dir="$OUT/debs" "$SUITE" "$ROOT" "$mirror"
    mount --bind /dev "$ROOT/dev"
    mount --bind /dev/pts "$ROOT/dev/pts"
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mkdir -p "$ROOT/var/cache/apt/archives"
    mount --bind "$OUT/debs" "$ROOT/var/cache/apt/archives"
    # The host's resolver for apt in the chroot; the image's own (systemd-resolved) replaces it below.
    rm -f "$ROOT/etc/resolv.conf"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    log_or_die in_root apt-get update
    log_or_die in_root apt-get install -y --no-install-recommends "${PACKAGES[@]}"
    rm -f "$ROOT/usr/sbin/policy-rc.d"
    umount "$ROOT/var/cache/apt/archives"
}

configure_system() {
    local mirror=$1
    echo "UUID=$UUID / ext4 errors=remount-ro 0 1" >"$ROOT/etc/fstab"
    echo debian >"$ROOT/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
    rm -f "$ROOT/etc/apt/sources.list"
    cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$ROOT/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
    ln -sf /run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
    # Local seeds only (a NoCloud "cidata" or an OpenStack "config-2" disk), never a metadata-service
    # probe. Two of them, because ds-identify takes a lone entry as found without looking: with no
    # seed it now disables cloud-init for that boot. The network stays networkd's; C.UTF-8 needs no
    # locales package.
    cat >"$ROOT/etc/cloud/cloud.cfg.d/90-pgappliance-base.cfg" <<'EOF'
datasource_list: [NoCloud, ConfigDrive]
network: {config: disabled}
locale: C.UTF-8
EOF
    # Host keys are made at boot, so that every disk made from this one gets its own.
    mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
    # Debian's unit checks the config (sshd -t, which fails without keys) first: keys come before it.
    printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
        >"$ROOT/etc/systemd/system/ssh.service.d/10-host-keys.conf"
    rm -f "$ROOT"/etc/ssh/ssh_host_*
    log_or_die in_root systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
        ssh.service
    : >"$ROOT/etc/machine-id"
}

add_build_user() {
    ssh-keygen -q -t ed25519 -N '' -C "pgappliance-build" -f "$WORK/build_ed25519"
    in_root useradd --create-home --shell /bin/bash --groups sudo "$USER_"
    install -d -m 0700 "$ROOT/home/$USER_/.ssh"
    install -m 0600 "$WORK/build_ed25519.pub" "$ROOT/home/$USER_/.ssh/authorized_keys"
    in_root chown -R "$USER_:$USER_" "/home/$USER_/.ssh"
    echo "$USER_ ALL=(ALL) NOPASSWD:ALL" >"$ROOT/etc/sudoers.d/90-pgappliance-build"
    chmod 0440 "$ROOT/etc/sudoers.d/90-pgappliance-build"
}

install_bootloader() {
    # /vmlinuz and /initrd.img are the links Debian's kernel packages keep current: kernel upgrades
    # inside the VM need no bootloader step.
    if [ ! -e "$ROOT/vmlinuz" ] || [ ! -e "$ROOT/initrd.img" ]; then
        die "no /vmlinuz or /initrd.img in the image"
    fi
    mkdir -p "$ROOT/boot/extlinux"
    cat >"$ROOT/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 1
LABEL debian
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8
EOF
    extlinux --install "$ROOT/boot/extlinux" >/dev/null
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
}

finish_root() {
    rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log "$ROOT"/tmp/* "$ROOT"/var/cache/debconf/*-old
    for m in dev/pts dev proc sys; do umount "$ROOT/$m"; done
    fstrim "$ROOT" >/dev/null 2>&1 || true
    umount "$ROOT"
    ROOT=
    losetup -d "$LOOP"
    LOOP=
}

write_outputs() {
    local sum
    mkdir -p "$OUT"
    qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/$NAME"
    install -m 0600 "$WORK/build_ed25519" "$OUT/build_ed25519"
    install -m 0644 "$WORK/build_ed25519.pub" "$OUT/build_ed25519.pub"
    mv "$WORK/$NAME" "$OUT/$NAME"
    sum=$(sha256sum "$OUT/$NAME" | cut -d' ' -f1)
    echo "$sum  $NAME" >"$OUT/$NAME.sha256"
    cat >"$OUT/base.pkrvars.hcl" <<EOF
# Written by packer/build-base-qcow2.sh: packer build -var-file=$OUT/base.pkrvars.hcl packer/
base_image           = "$OUT/$NAME"
base_image_checksum  = "sha256:$sum"
ssh_username         = "$USER_"
ssh_private_key_file = "$OUT/build_ed25519"
EOF
}

main() {
    local start mirror
    start=$(date +%s)
    need_tools
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    WORK=$(mktemp -d /var/tmp/pgappliance-vmbase.XXXXXX)
    make_disk
    bootstrap "$mirror"
    configure_system "$mirror"
    add_build_user
    install_bootloader
    finish_root
    write_outputs
    say "$OUT/$NAME: $(du -h "$OUT/$NAME" | cut -f1) on disk, $SIZE virtual, built in $(($(date +%s) - start)) s"
    say "use it: packer build -var-file=$OUT/base.pkrvars.hcl packer/"
}

main
