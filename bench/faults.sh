#!/usr/bin/env bash
# Fault injection against the release binary, a PostgreSQL cluster of its own (so it can be restarted)
# and Postfix's smtp-sink dumping every message to a file (so duplicates are counted by Message-ID, from
# what the relay actually received). Each case prints one PASS/FAIL line with its figure.
#
#   bench/faults.sh            kill -9 x10 during 50,000; PostgreSQL restart; relay down for 60 s
#   bench/faults.sh --quick    the same with 10,000 recipients and a 15 s outage
#
# The cases that need a scriptable relay (421 for one domain, SIGTERM mid-wave, a broken outbox) are
# integration tests run by scripts/test: tests/it/faults.rs and tests/it/dispatch.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
[ "${1:-}" = "--quick" ] && mode=quick
if [ "$mode" = quick ]; then n_kill=10000; outage=15; else n_kill=50000; outage=60; fi
kills=10
max_in_flight=200

die() { echo "faults: $*" >&2; exit 1; }
say() { echo "-- $*" >&2; }
for tool in python3 psql smtp-sink; do command -v "$tool" >/dev/null || die "$tool not found (apt-get install python3 postgresql-client postfix)"; done

cargo build --release --locked -q
bin="${CARGO_TARGET_DIR:-$(pwd)/target}/release/breach-notifier"
work=$(mktemp -d "${TMPDIR:-/tmp}/bn-faults.XXXXXX")
chmod 777 "$work"
pids=()
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
cleanup() {
  # Reaped quietly: the shell would otherwise report each "Killed" job as the script exits.
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pkill -f "smtp-sink -u nobody 127.0.0.1:$sink_port" 2>/dev/null || true
  pg_throwaway_stop
  rm -rf "$work"
}
sink_port=0
trap cleanup EXIT
pg_throwaway_start
export BREACH_NOTIFIER__DATABASE__URL="$PG_THROWAWAY_URL"
export BREACH_NOTIFIER__LOG__LEVEL=warn
sql() { psql "$PG_THROWAWAY_URL" -X -qAt -c "$1"; }
"$bin" migrate >/dev/null

sink_port=$(( 20000 + RANDOM % 40000 ))
dump="$work/dump"; mkdir -p "$dump"; chmod 777 "$dump"
start_sink() { smtp-sink -u nobody -d "$dump/%H%M%S." 127.0.0.1:"$sink_port" 1000 & sink_pid=$!; pids+=("$sink_pid"); sleep 0.3; }
start_sink

export BREACH_NOTIFIER__TRANSPORT__KIND=smtp BREACH_NOTIFIER__TRANSPORT__SMTP__HOST=127.0.0.1 \
  BREACH_NOTIFIER__TRANSPORT__SMTP__PORT="$sink_port" BREACH_NOTIFIER__TRANSPORT__SMTP__TLS=none \
  BREACH_NOTIFIER__TRANSPORT__SMTP__TIMEOUT_SECS=5 \
  BREACH_NOTIFIER__DISPATCH__MAX_IN_FLIGHT=$max_in_flight BREACH_NOTIFIER__DISPATCH__LEASE_SECS=3 \
  BREACH_NOTIFIER__DISPATCH__HEARTBEAT_SECS=1 BREACH_NOTIFIER__DISPATCH__RESCAN_SECS=1 \
  BREACH_NOTIFIER__DISPATCH__POLL_INTERVAL_MS=100 BREACH_NOTIFIER__DISPATCH__RETRY_BASE_SECS=2 \
  BREACH_NOTIFIER__DISPATCH__RETRY_CAP_SECS=10

new_campaign() {  # new_campaign N SEED -> id (started)
  local id
  id=$("$bin" campaign create bench/campaign.toml 2>/dev/null)
  ALL_EMAIL=1 python3 examples/generate_recipients.py "$1" "$2" > "$work/list.csv"
  "$bin" import --campaign "$id" "$work/list.csv" >/dev/null 2>&1
  "$bin" campaign start "$id" >/dev/null 2>&1
  echo "$id"
}
daemon() { "$bin" run 2>>"$work/daemon.log" & daemon_pid=$!; pids+=("$daemon_pid"); }
wait_completed() {  # wait_completed ID SECONDS -> 0 when completed in time
  local t0=$SECONDS
  while [ $(( SECONDS - t0 )) -lt "$2" ]; do
    [ "$(sql "SELECT state FROM campaigns WHERE id = $1" 2>/dev/null)" = completed ] && return 0
    sleep 0.5
  done
  return 1
}
message_ids() { grep -h -i '^message-id:' -r "$dump" | sed 's/^[^:]*: *//' | tr -d '\r'; }
results=()
verdict() { results+=("$1"); echo "$1"; }
failed=0

# 1. kill -9 at random moments, ten times ------------------------------------------------------------
say "kill -9 x$kills during $n_kill recipients"
rm -rf "${dump:?}"/*
c=$(new_campaign "$n_kill" 21)
for i in $(seq 1 $kills); do
  daemon
  sleep "$(python3 -c "import random; print(round(random.uniform(0.5, 2.5), 2))")"
  kill -9 "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
  sleep 3.5   # heartbeat stale, leases lapsed
done
daemon
if wait_completed "$c" 600; then
  kill -TERM "$daemon_pid"; wait "$daemon_pid" || true
  read -r total open <<<"$(sql "SELECT total, queued + deferred FROM campaign_progress WHERE campaign_id = $c" | tr '|' ' ')"
  received=$(message_ids | wc -l)
  distinct=$(message_ids | sort -u | wc -l)
  lost=$(( total - distinct )); dup=$(( received - distinct )); bound=$(( kills * max_in_flight ))
  if [ "$open" = 0 ] && [ "$lost" = 0 ] && [ "$dup" -le "$bound" ]; then
    verdict "PASS kill -9 x$kills during $total: every recipient final, lost $lost, duplicated $dup (bound $bound)"
  else
    verdict "FAIL kill -9 x$kills during $total: open $open, lost $lost, duplicated $dup (bound $bound)"; failed=1
  fi
else
  verdict "FAIL kill -9 x$kills: the campaign did not complete after the last restart"; failed=1
fi

# 2. PostgreSQL restarted mid-campaign ------------------------------------------------------------
say "PostgreSQL restart mid-campaign"
c=$(new_campaign 10000 22)
export BREACH_NOTIFIER__LIMITS__GLOBAL_PER_SECOND=1000
daemon
sleep 3
t0=$SECONDS
_pg_as_postgres "$_pg_ctl_bin" -D "$PG_THROWAWAY_DIR/data" -m fast -w restart >/dev/null
if wait_completed "$c" 180; then
  sent=$(sql "SELECT sent FROM campaign_progress WHERE campaign_id = $c")
  kill -0 "$daemon_pid" && verdict "PASS PostgreSQL restarted: the daemon reconnected and finished ($sent sent, $(( SECONDS - t0 )) s after the restart)" \
    || { verdict "FAIL PostgreSQL restarted: the daemon exited"; failed=1; }
else
  verdict "FAIL PostgreSQL restarted: the campaign did not finish within 180 s"; failed=1
fi
kill -TERM "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null || true
unset BREACH_NOTIFIER__LIMITS__GLOBAL_PER_SECOND

# 3. The relay down, then back ------------------------------------------------------------------
say "relay down for $outage s"
export BREACH_NOTIFIER__LIMITS__GLOBAL_PER_SECOND=200
c=$(new_campaign 6000 23)
daemon
sleep 3
kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
sleep "$outage"
deferred=$(sql "SELECT count(*) FROM delivery_attempts WHERE campaign_id = $c AND outcome <> 'sent'")
start_sink
if wait_completed "$c" 300; then
  read -r sent failedn <<<"$(sql "SELECT sent, failed FROM campaign_progress WHERE campaign_id = $c" | tr '|' ' ')"
  if [ "$failedn" = 0 ] && [ "$deferred" -gt 0 ]; then
    verdict "PASS relay down $outage s: $deferred attempts deferred during the outage, then all $sent sent, none failed"
  else
    verdict "FAIL relay down: failed $failedn, deferred $deferred"; failed=1
  fi
else
  verdict "FAIL relay down: the campaign did not finish after the relay came back"; failed=1
fi
kill -TERM "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null || true

echo
printf '%s\n' "${results[@]}"
exit $failed
