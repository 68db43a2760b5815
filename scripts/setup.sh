#!/usr/bin/env bash
# Installs what qmpkit's tests and demo need, when missing: Deno (from npm),
# QEMU, openssl, the tiny guest's packages (busybox-static, qemu-guest-agent), Chromium
# for the HTML report's test, OpenSSH (client for ssh:// addresses, server for the
# tests' throwaway sshd) and libvirt (libvirt-daemon-system, libvirt-clients: the
# libvirt transport's tests) (from apt), then builds the tiny guest.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

if ! command -v deno >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    say "Deno is missing and npm is not available to install it."
    say "Install Node.js + npm, or Deno itself (https://deno.com), then run this again."
    exit 1
  fi
  say "installing Deno with npm (npm install -g deno)"
  npm install -g deno >/dev/null 2>&1 || $SUDO npm install -g deno
fi

pkgs=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || pkgs+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || pkgs+=(qemu-utils)
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)
  # The tiny guest's agent: the builder copies the host's qemu-ga and its libraries.
  dpkg -s qemu-guest-agent >/dev/null 2>&1 || pkgs+=(qemu-guest-agent)
  # libvirt: libvirtd (tests start it without systemd) and libvirt.so / virsh.
  dpkg -s libvirt-daemon-system >/dev/null 2>&1 || pkgs+=(libvirt-daemon-system)
  dpkg -s libvirt-clients >/dev/null 2>&1 || pkgs+=(libvirt-clients)
fi
command -v cpio >/dev/null 2>&1 || pkgs+=(cpio)
command -v tmux >/dev/null 2>&1 || pkgs+=(tmux)
# The HTML report is tested in a headless Chromium (tests/html_chromium_test.ts).
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
# The TLS tests make their certificates with openssl.
command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
command -v ssh >/dev/null 2>&1 || pkgs+=(openssh-client)
# The tests run their own sshd on 127.0.0.1; the package's system service is not needed.
[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
    say "missing packages: ${pkgs[*]}"
    say "run as root: apt-get install -y ${pkgs[*]}"
    exit 1
  fi
  say "installing ${pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # Installing openssh-server would start the system sshd on every interface: the tests
  # only need the binary (they run their own on 127.0.0.1), so no service starts during
  # this install (Debian's policy-rc.d; only when there is none already).
  policy=""
  if [[ " ${pkgs[*]} " == *" openssh-server "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
  if [ -n "$policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
    say "openssh-server installed without starting its service (systemctl disable ssh keeps it off at boot)"
  fi
fi

say "$(deno --version | head -1); $(qemu-system-x86_64 --version | head -1)"
# stdout stays clean for scripts: the guest's path is reported on stderr like the rest.
guest=$(deno task --quiet guest --quiet)
say "tiny guest: $guest"
