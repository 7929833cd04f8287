# shellcheck shell=bash
# The status page under viewers: `BENCH_ONLY=status bench/run.sh`.
#
#   SCALE_ROWS=15000000     customers in the campaign (validate the script at 300000)
#   STATUS_PHASE_SECS=60    how long each phase sends (without viewers, then with them)
#   STATUS_VIEWERS=20       viewers, each fetching the campaign page and /api/status every 2 s
#   STATUS_PAIRS=3          phases without then with viewers; the rates compared are the medians
#
# Sourced by bench/run.sh once its set-up is done (bench database $url, $work, smtp-sink on
# $sink_port with the dispatch environment, the helpers bn, sql, row, query_ms, campaign, say, die).
# In order: SCALE_ROWS customers generated (bench/generate_scale.py) and imported, the campaign
# started; the daemon with its HTTP endpoint on a free port; STATUS_PAIRS pairs of phases, without
# viewers then with STATUS_VIEWERS of them (bench/viewers.py), each STATUS_PHASE_SECS long, their send
# rates counted from delivery_attempts (medians compared); the page and /api/status latency under the viewers (p50, p95, max), the
# page read alone with its cache expired (median of 5), and a screenshot of the campaign page
# (bench/results/status-page.png) when Chromium is installed. The daemon is stopped by SIGTERM.
# shellcheck disable=SC2154  # bin, url, work, pids, sink_port: set by bench/run.sh

status_rows=${SCALE_ROWS:-15000000}
status_secs=${STATUS_PHASE_SECS:-60}
status_viewers=${STATUS_VIEWERS:-20}
status_pairs=${STATUS_PAIRS:-3}
# shellcheck disable=SC2034  # mode: printed by run.sh in the results file
mode="status page, SCALE_ROWS=$status_rows STATUS_PHASE_SECS=$status_secs STATUS_VIEWERS=$status_viewers"
now() { date +%s.%N; }
fmt() { printf "%.${2:-2}f" "$1"; }

say "status: generating and importing $status_rows customers"
python3 bench/generate_scale.py "$status_rows" 15 > "$work/status.csv"
c_status=$(campaign bench/campaign-scale.toml)
bn import --campaign "$c_status" "$work/status.csv" > "$work/status-import.out" 2>&1 \
  || { cat "$work/status-import.out" >&2; die "the import failed"; }
rm -f "$work/status.csv"
bn campaign start "$c_status" > "$work/status-start.out" 2>&1 || { cat "$work/status-start.out" >&2; die "campaign start failed"; }
sql "VACUUM (ANALYZE) recipients" >/dev/null

http_port=$(free_port)
page="http://127.0.0.1:$http_port"
BREACH_NOTIFIER__HTTP__ENABLED=true BREACH_NOTIFIER__HTTP__LISTEN="127.0.0.1:$http_port" \
  "$bin" run >/dev/null 2>"$work/status-daemon.log" & dpid=$!
pids+=("$dpid")
for _ in $(seq 1 100); do curl -sf "$page/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$page/healthz" >/dev/null || { cat "$work/status-daemon.log" >&2; die "the daemon's endpoint did not come up"; }
sleep 5   # past the start-up: the first claims, the first wave's release

# rate_between T0 T1: the campaign's attempts started in [T0, T1) (epoch seconds), per second; a
# window the campaign ran out in ends at its last attempt (a small SCALE_ROWS can run out).
rate_between() {
  local n end
  read -r n end <<<"$(sql "SELECT count(*), least($2, extract(epoch FROM max(started_at)))
           FROM delivery_attempts WHERE campaign_id = $c_status
           AND started_at >= to_timestamp($1) AND started_at < to_timestamp($2)" | tr '|' ' ')"
  [ "$(sql "SELECT queued + deferred FROM campaign_progress WHERE campaign_id = $c_status")" = 0 ] || end=$2
  [ -n "$end" ] || end=$2
  echo "$n / ($end - $1)" | bc -l
}

# Phases alternate, without viewers then with them, STATUS_PAIRS times: on a shared machine the rate
# drifts (autovacuum after the import, the other wave, neighbours), and a drift lands on both sides.
alone_rates=(); watched_rates=(); viewer_files=()
for pair in $(seq 1 "$status_pairs"); do
  say "status: pair $pair: $status_secs s without viewers, then $status_secs s with $status_viewers polling every 2 s"
  t0=$(now); sleep "$status_secs"; t1=$(now)
  alone_rates+=("$(rate_between "$t0" "$t1")")
  python3 bench/viewers.py "$page" "$c_status" "$status_viewers" 2 "$status_secs" > "$work/viewers-$pair.json"
  t2=$(now)
  watched_rates+=("$(rate_between "$t1" "$t2")")
  viewer_files+=("$work/viewers-$pair.json")
  kill -0 "$dpid" 2>/dev/null || { cat "$work/status-daemon.log" >&2; die "the daemon died"; }
  say "status: pair $pair: $(fmt "${alone_rates[-1]}" 0) msg/s without, $(fmt "${watched_rates[-1]}" 0) msg/s with viewers"
  if [ "$(sql "SELECT queued + deferred FROM campaign_progress WHERE campaign_id = $c_status")" = 0 ]; then
    say "status: the campaign ran out after pair $pair (SCALE_ROWS too small for the phases)"
    break
  fi
done
middle() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
alone=$(middle "${alone_rates[@]}")
watched=$(middle "${watched_rates[@]}")

# The page alone, its snapshot expired (every read a miss): what one refresh costs at this size.
cold=()
for _ in 1 2 3 4 5; do
  sleep 2
  cold+=("$(curl -s -o /dev/null -w '%{time_total}' "$page/campaigns/$c_status")")
done
cold_ms=$(printf '%s\n' "${cold[@]}" | sort -g | sed -n 3p)
cold_ms=$(echo "$cold_ms * 1000" | bc -l)
api_cold=()
for _ in 1 2 3 4 5; do
  sleep 2
  api_cold+=("$(curl -s -o /dev/null -w '%{time_total}' "$page/api/status")")
done
api_cold_ms=$(echo "$(printf '%s\n' "${api_cold[@]}" | sort -g | sed -n 3p) * 1000" | bc -l)

if [ -x /usr/bin/chromium ]; then
  mkdir -p bench/results
  timeout 60 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chromium" --hide-scrollbars --window-size=1280,1900 \
    --virtual-time-budget=3000 --screenshot="$(pwd)/bench/results/status-page.png" \
    "$page/campaigns/$c_status" >/dev/null 2>&1 \
    && say "status: screenshot in bench/results/status-page.png" \
    || say "status: the screenshot failed (chromium)"
else
  say "status: no screenshot (chromium is not installed: apt-get install chromium)"
fi
kill -TERM "$dpid"; wait "$dpid" || true

# The deadline reads at this size, with what the run sent (docs/deadlines.md, docs/regulators.md):
# the per-jurisdiction view (psql \timing, median of 5) and the regulator report, whole process.
juris_ms=$(query_ms "SELECT * FROM jurisdiction_progress WHERE campaign_id = $c_status")
juris_rows=$(sql "SELECT count(*) FROM jurisdiction_progress WHERE campaign_id = $c_status")
say "status: report regulators"
/usr/bin/time -f "%e %M" -o "$work/report.time" "$bin" report regulators --campaign "$c_status" \
  --format csv > "$work/report.csv" 2>"$work/report.err" || { cat "$work/report.err" >&2; die "report regulators failed"; }
read -r report_s report_kb < "$work/report.time"
report_lines=$(wc -l < "$work/report.csv")

read -r page_n page_err page_p50 page_p95 page_max api_n api_err api_p50 api_p95 api_max <<<"$(
  python3 bench/viewers.py --summary "/campaigns/$c_status" "${viewer_files[@]}")"
[ "$page_err" = 0 ] && [ "$api_err" = 0 ] || say "status: $page_err page and $api_err API requests failed"
row "campaign page, $status_viewers viewers every 2 s, at $status_rows" "p95 $(fmt "$page_p95" 1) ms" \
  "p50 $(fmt "$page_p50" 1), max $(fmt "$page_max" 0) ms, $page_n requests" "-" "< 100 ms"
row "/api/status, $status_viewers viewers every 2 s, at $status_rows" "p95 $(fmt "$api_p95" 1) ms" \
  "p50 $(fmt "$api_p50" 1), max $(fmt "$api_max" 0) ms, $api_n requests" "-" "< 100 ms"
row "campaign page alone, snapshot expired (median of 5)" "$(fmt "$cold_ms" 1) ms" \
  "/api/status: $(fmt "$api_cold_ms" 1) ms" "-" "< 100 ms"
row "dispatch with $status_viewers viewers vs without (median of ${#alone_rates[@]} pairs)" "$(fmt "$watched" 0) msg/s" \
  "without: $(fmt "$alone" 0) msg/s" "$(fmt "$(echo "$watched / $alone" | bc -l)")" "≥ 0.90"
row "jurisdiction_progress at $status_rows, $juris_rows rows (median of 5)" "$juris_ms ms" "-" "-" "< 50 ms"
row "report regulators at $status_rows ($report_lines lines)" "$(fmt "$report_s") s" \
  "peak $(( report_kb / 1024 )) MB" "-" "< 30 s"
