#!/usr/bin/env bash
# Measures what the PostgreSQL settings that docs/deploy.md recommends for large campaigns change: the
# same import into two throwaway clusters, one with PostgreSQL's defaults and one with the recommended
# settings, then the daemon sending for a while to smtp-sink. Prints, per cluster, the import's time,
# the checkpoints it caused, the WAL written, and the daemon's rate.
#
#   bench/pg-settings.sh [ROWS] [RUN_SECS]     (default 3,000,000 rows and 30 s)
#
# Needs what bench/run.sh needs (PostgreSQL's initdb/pg_ctl, smtp-sink, python3, bc). Everything runs on
# loopback in a temporary folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-3000000}
run_secs=${2:-30}
recommended="-c max_wal_size=16GB -c checkpoint_timeout=15min -c checkpoint_completion_target=0.9"

die() { echo "pg-settings: $*" >&2; exit 1; }
say() { echo "-- $*" >&2; }
command -v smtp-sink >/dev/null || die "smtp-sink not found (apt-get install postfix)"
cargo build --release --locked -q
bin="${CARGO_TARGET_DIR:-$(pwd)/target}/release/breach-notifier"
work=$(mktemp -d "${TMPDIR:-/tmp}/bn-pgset.XXXXXX")
sink=""
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
cleanup() { [ -n "$sink" ] && kill "$sink" 2>/dev/null; pg_throwaway_stop; rm -rf "$work"; }
trap cleanup EXIT

python3 bench/generate_scale.py "$rows" 21 > "$work/list.csv"
port=$(( 20000 + RANDOM % 40000 ))
smtp-sink -u nobody 127.0.0.1:"$port" 1000 & sink=$!
export BREACH_NOTIFIER__LOG__LEVEL=warn BREACH_NOTIFIER__TRANSPORT__KIND=smtp \
  BREACH_NOTIFIER__TRANSPORT__SMTP__HOST=127.0.0.1 BREACH_NOTIFIER__TRANSPORT__SMTP__PORT="$port" \
  BREACH_NOTIFIER__TRANSPORT__SMTP__TLS=none BREACH_NOTIFIER__TRANSPORT__SMTP__POOL_SIZE=20 \
  BREACH_NOTIFIER__DISPATCH__CONCURRENCY=20

measure() {  # measure LABEL [server options…]
  local label=$1; shift
  pg_throwaway_start "$@"
  export BREACH_NOTIFIER__DATABASE__URL=$PG_THROWAWAY_URL
  local sql=(psql "$PG_THROWAWAY_URL" -X -qAt -c)
  "$bin" migrate >/dev/null
  local id ck0 wal0 t0 import_s ck_import wal_gb first sent rate
  id=$("$bin" campaign create bench/campaign.toml 2>/dev/null)
  ck0=$("${sql[@]}" "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
  wal0=$("${sql[@]}" "SELECT pg_current_wal_lsn()")
  t0=$(date +%s.%N)
  "$bin" import --campaign "$id" "$work/list.csv" >/dev/null 2>&1
  import_s=$(echo "$(date +%s.%N) - $t0" | bc -l)
  ck_import=$(( $("${sql[@]}" "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter") - ck0 ))
  wal_gb=$("${sql[@]}" "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0') / 1073741824, 2)")
  "$bin" campaign start "$id" >/dev/null 2>&1
  ck0=$("${sql[@]}" "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
  timeout -s TERM "$run_secs" "$bin" run >/dev/null 2>&1 || true
  first=$("${sql[@]}" "SELECT extract(epoch FROM min(started_at)) FROM delivery_attempts")
  sent=$("${sql[@]}" "SELECT count(*) FROM delivery_attempts WHERE started_at >= to_timestamp($first) + interval '5 seconds'")
  rate=$(echo "$sent / ($run_secs - 6)" | bc -l)
  printf '%-12s import %6.1f s (%6.0f rows/s), %2d checkpoint(s), %5s GB of WAL; daemon %6.0f msg/s, %d checkpoint(s) in %d s\n' \
    "$label" "$import_s" "$(echo "$rows / $import_s" | bc -l)" "$ck_import" "$wal_gb" "$rate" \
    "$(( $("${sql[@]}" "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter") - ck0 ))" "$run_secs"
  pg_throwaway_stop
}

say "$rows rows, daemon $run_secs s: defaults, then $recommended"
# shellcheck disable=SC2086  # the options are words
measure defaults
# shellcheck disable=SC2086
measure recommended $recommended
