#!/bin/sh
# What every suite layer (bullseye/, and puppetserver/ for bookworm and trixie) is made of:
# systemd as PID 1, real OpenSSH and the accounts the fixture logs in with, plus the
# suite's own Puppet packages given as arguments. A layer's Dockerfile runs it as
#   sh /tmp/suite-layer.sh PUPPET-PACKAGE...
# and then does what is its own (which Puppet units are disabled, puppetserver's tuning).
set -eu
apt-get update -q
apt-get install -y -q --no-install-recommends \
  systemd systemd-sysv dbus openssh-server \
  "$@" \
  curl openssl ca-certificates procps iproute2
apt-get clean && rm -rf /var/lib/apt/lists/*
# Host keys are generated at build time (openssh-server's postinst did it above):
# they are printed by the fixture as a known_hosts line.
# Root logs in with a key only; the key is bind-mounted by the fixture at start.
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n' \
  > /etc/ssh/sshd_config.d/pe-remote.conf
install -d -m 0700 /root/.ssh
# "deploy" is a non-root account that exists so tests can prove non-root logins
# are refused by pe-remote.
useradd --create-home --shell /bin/bash deploy
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
systemctl mask systemd-logind.service getty.target console-getty.service systemd-firstboot.service
systemctl enable ssh.service
