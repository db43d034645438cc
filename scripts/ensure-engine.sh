#!/bin/sh
# Make sure a Docker engine answers and the base-image tools exist, on a fresh
# machine of this project's kind (Debian 12, root, no registry) or a laptop.
# Installs docker.io and debootstrap with apt when missing (root only), starts
# dockerd in the background when no engine answers, and waits for it.
set -eu
LOG=${PE_REMOTE_DOCKERD_LOG:-/var/log/pe-remote-dockerd.log}

# debootstrap builds the base image where debian:bookworm cannot be pulled;
# docker.io is needed only when no engine answers already.
need_apt=""
command -v debootstrap >/dev/null 2>&1 || need_apt="debootstrap"
if ! docker version >/dev/null 2>&1 && ! command -v dockerd >/dev/null 2>&1; then
    need_apt="$need_apt docker.io"
fi
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-engine: installing $need_apt"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt >/dev/null
    else
        echo "ensure-engine: missing $need_apt (install it as root if the steps below fail)" >&2
    fi
fi

if docker version >/dev/null 2>&1; then
    echo "ensure-engine: Docker engine answers"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-engine: no Docker engine answers and this is not root: start dockerd" >&2
    exit 1
fi
echo "ensure-engine: starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 60 ]; then
        echo "ensure-engine: dockerd did not answer within 60 s; last log lines:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    sleep 1
done
echo "ensure-engine: Docker engine answers"
