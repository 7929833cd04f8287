#!/usr/bin/env bash
# Checks deploy/breach-notifier.service with systemd's own tools:
#   1. `systemd-analyze verify`: the unit parses, every key is known to this systemd, the referenced
#      targets exist, and ExecStart is executable. Any output at all (systemd prints warnings such as
#      "Unknown key" but still exits 0) counts as a failure.
#   2. `systemd-analyze security --offline=yes --threshold=20`: the hardening keeps the exposure
#      score at 2.0 or below (the threshold is in tenths; "OK" is below 4.0; the unit scores 1.2).
# ExecStart names /usr/local/bin/breach-notifier, where docs/deploy.md installs it; here the check runs
# on a copy whose ExecStart points at the binary in target/release or target/debug (`cargo build` when
# there is neither).
#
# Without systemd-analyze (and as root with apt-get, it is installed: `apt-get install systemd`), this
# prints "deploy/verify-unit.sh: NOT RUN: …" with the reason and exits 0, so that a CI without systemd
# still passes: read that line in the log. Set VERIFY_UNIT_REQUIRED=1 to make its absence a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=deploy/breach-notifier.service
not_run() {
  printf 'deploy/verify-unit.sh: NOT RUN: %s\n' "$*"
  if [ "${VERIFY_UNIT_REQUIRED:-0}" = 1 ]; then exit 1; fi
  exit 0
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deploy/verify-unit.sh: systemd-analyze missing; installing the systemd package"
    if ! { apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1; }; }; then
      not_run "systemd-analyze is not installed and 'apt-get install systemd' failed"
    fi
  fi
  command -v systemd-analyze >/dev/null 2>&1 \
    || not_run "systemd-analyze is not installed (install the systemd package: apt-get install systemd)"
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
binary="$target/release/breach-notifier"
[ -x "$binary" ] || binary="$target/debug/breach-notifier"
if [ ! -x "$binary" ]; then
  cargo build --locked --quiet --bin breach-notifier
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/bn-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/breach-notifier |ExecStart=$binary |" "$unit" >"$work/breach-notifier.service"
grep -q "^ExecStart=$binary " "$work/breach-notifier.service" \
  || { echo "deploy/verify-unit.sh: ExecStart in $unit no longer starts with /usr/local/bin/breach-notifier" >&2; exit 1; }

echo "== systemd-analyze verify $unit ($(systemd-analyze --version | head -n 1))"
status=0
output=$(cd "$work" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify ./breach-notifier.service 2>&1) || status=$?
if [ "$status" != 0 ] || [ -n "$output" ]; then
  printf '%s\n' "$output" >&2
  echo "deploy/verify-unit.sh: FAILED: systemd-analyze verify (exit $status) reported the lines above" >&2
  exit 1
fi
echo "ok: no warnings"

echo "== systemd-analyze security --offline=yes --threshold=20 (exposure at most 2.0)"
if ! report=$(cd "$work" && systemd-analyze security --offline=yes --threshold=20 --no-pager ./breach-notifier.service 2>&1); then
  printf '%s\n' "$report" >&2
  echo "deploy/verify-unit.sh: FAILED: the exposure score is above 2.0 (report above)" >&2
  exit 1
fi
printf '%s\n' "$report" | tail -n 1
echo "deploy/verify-unit.sh: passed"
