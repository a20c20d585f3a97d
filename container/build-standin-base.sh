#!/usr/bin/env bash
# Build a local stand-in for a base image that cannot be pulled (an offline or proxied build
# machine), so `podman build --pull=never -f Dockerfile.cpu .` works there. Test tooling only:
# the published images are built FROM the real python:3.11-slim.
#
# The stand-in is a Debian bookworm minbase root file system (Python 3.11, pip, venv,
# ca-certificates) imported under the base image's name. Debian's python lives in /usr/bin, the
# slim image's in /usr/local/bin: symlinks give `python`, `python3` and `pip` on PATH in both
# places, so the Dockerfile works unchanged against either. The host's extra CA certificates
# (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's) are added to the bundle and
# PIP_CERT / SSL_CERT_FILE / REQUESTS_CA_BUNDLE point at it, so pip inside `podman build`
# trusts the same proxy the host does.
#
# usage: container/build-standin-base.sh [IMAGE]   (default docker.io/library/python:3.11-slim)
#   --configure-podman  first write /etc/containers/{storage,containers}.conf when absent
#                       (overlay storage, runc, cgroupfs, file events, nofile/nproc ulimits)
# env:  STANDIN_SUITE (bookworm), STANDIN_MIRROR (http://deb.debian.org/debian),
#       STANDIN_FORCE=1 rebuilds even when IMAGE already exists.
set -euo pipefail

configure=0
image=docker.io/library/python:3.11-slim
for arg in "$@"; do
    case "$arg" in
        --configure-podman) configure=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "unknown option: $arg" >&2; exit 2 ;;
        *) image=$arg ;;
    esac
done
suite=${STANDIN_SUITE:-bookworm}
mirror=${STANDIN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'build-standin-base: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "build-standin-base: needs root (debootstrap, chroot)" >&2
    exit 77
fi
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { echo "build-standin-base: $tool not installed" >&2; exit 77; }
done

if [ "$configure" = 1 ]; then
    mkdir -p /etc/containers
    if [ ! -e /etc/containers/storage.conf ]; then
        log "writing /etc/containers/storage.conf"
        cat > /etc/containers/storage.conf <<'CONF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
    fi
    if [ ! -e /etc/containers/containers.conf ]; then
        log "writing /etc/containers/containers.conf"
        cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    fi
fi

if [ "${STANDIN_FORCE:-0}" != 1 ] && podman image exists "$image"; then
    log "$image already present; nothing to do (STANDIN_FORCE=1 rebuilds it)"
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/autoseg-standin.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite minbase into $rootfs"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror" >&2

# Both python layouts on PATH: /usr/local/bin (slim) and /usr/bin (Debian).
for dir in /usr/local/bin /usr/bin; do
    [ -e "$rootfs$dir/python" ] || ln -s /usr/bin/python3 "$rootfs$dir/python"
    [ -e "$rootfs$dir/python3" ] || ln -s /usr/bin/python3 "$rootfs$dir/python3"
    [ -e "$rootfs$dir/pip" ] || ln -s /usr/bin/pip3 "$rootfs$dir/pip"
done

# The host's extra CAs (a TLS-inspecting proxy's) join the image's bundle.
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >&2
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

bundle=/etc/ssl/certs/ca-certificates.crt
log "importing as $image"
tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV PIP_CERT=$bundle" \
    --change "ENV SSL_CERT_FILE=$bundle" \
    --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
    --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$image" >/dev/null
log "done: $image"
