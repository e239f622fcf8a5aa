#!/usr/bin/env bash
# Gets what the cgroup v2 VM tests need: qemu, busybox and cpio from Debian, and a Debian cloud
# kernel (downloaded and unpacked, never installed) whose uncompressed vmlinux is cached.
#
# Usage: test/vm/prepare.sh [--install]
#   --install  apt-get install the missing tools (CI; needs root and the Debian mirror)
# Prints `vmlinux=<path>` and `kernel=<package>` on success. Exits 2 with the reason on stderr when
# something cannot be had; the VM tests are then skipped with that reason.
# MP_VM_KERNEL_PACKAGE names a kernel package to use instead of the newest cloud kernel.
set -euo pipefail
cd "$(dirname "$0")"
cache="$PWD/.cache"
mkdir -p "$cache"

fail() {
  echo "$*" >&2
  exit 2
}

tools=(qemu-system-x86_64 busybox cpio)
# The kernel decompressors for each compression Debian has used for vmlinuz.
unpackers=(zstd xz lz4 gzip)
packages=(qemu-system-x86 busybox-static cpio zstd xz-utils lz4)

missing() {
  local t
  for t in "${tools[@]}" "${unpackers[@]}" apt-get dpkg-deb; do command -v "$t" >/dev/null || echo "$t"; done
}

if [ "${1:-}" = "--install" ] && [ -n "$(missing)" ]; then
  [ "$(id -u)" = 0 ] || fail "cannot install $(missing | tr '\n' ' ')(not root)"
  apt-get update -qq >&2 || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2 ||
    fail "apt-get install ${packages[*]} failed"
fi
[ -z "$(missing)" ] || fail "missing $(missing | tr '\n' ' ')(install: apt-get install ${packages[*]})"

# The newest cloud kernel the package lists offer: 6.12 on bookworm, closest to what users run.
# MP_VM_KERNEL_PACKAGE=linux-image-6.1.0-56-cloud-amd64 passed the PSI and discovery guest tests too.
pick_kernel() {
  apt-cache search --names-only '^linux-image-[0-9][0-9.+a-z-]*-cloud-amd64$' 2>/dev/null |
    awk '{print $1}' | grep -v -e '-dbg$' -e '-unsigned$' | sort -V | tail -n 1
}
pkg="${MP_VM_KERNEL_PACKAGE:-}"
if [ -z "$pkg" ]; then
  # Reuse what is cached when the package lists cannot be read (offline).
  pkg="$(pick_kernel || true)"
  if [ -z "$pkg" ] && [ "${1:-}" = "--install" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 || true
    pkg="$(pick_kernel || true)"
  fi
  if [ -z "$pkg" ]; then
    pkg="$(ls -1 "$cache/kernel" 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
fi
[ -n "$pkg" ] || fail "no Debian cloud kernel package found (apt-cache search linux-image-*-cloud-amd64; run apt-get update)"
dir="$cache/kernel/$pkg"
vmlinux="$dir/vmlinux"

if [ ! -s "$vmlinux" ]; then
  work="$(mktemp -d "$cache/.kernel.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # apt-get download writes into the current directory; as root it warns that the _apt user
  # cannot write there, which is harmless.
  (cd "$work" && apt-get download -qq "$pkg" >&2 2>/dev/null) || fail "apt-get download $pkg failed"
  dpkg-deb -x "$work"/*.deb "$work/root" || fail "dpkg-deb -x failed for $pkg"
  vmlinuz="$(ls "$work"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)"
  [ -n "$vmlinuz" ] || fail "$pkg has no /boot/vmlinuz-*"
  # The bzImage holds the kernel ELF as one compressed stream after the setup code: find each magic
  # number and keep the first candidate that unpacks to an ELF file (the kernel's
  # scripts/extract-vmlinux does the same). Decompressors complain about the trailing bytes.
  try() {
    local magic="$1" cmd="$2" off
    for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1); do
      tail -c +$((off + 1)) "$vmlinuz" | $cmd >"$work/vmlinux" 2>/dev/null || true
      if [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then return 0; fi
    done
    return 1
  }
  try '\x28\xb5\x2f\xfd' 'zstd -dc' || try '\xfd\x37\x7a\x58\x5a\x00' 'xz -dc' ||
    try '\x02\x21\x4c\x18' 'lz4 -dc' || try '\x1f\x8b\x08' 'gzip -dc' ||
    fail "cannot find an uncompressed kernel in $vmlinuz"
  mkdir -p "$dir"
  cp "$work"/root/boot/config-* "$dir/config"
  mv "$work/vmlinux" "$vmlinux"
fi
grep -q '^CONFIG_PSI=y' "$dir/config" || fail "$pkg lacks CONFIG_PSI"
echo "kernel=$pkg"
echo "vmlinux=$vmlinux"
