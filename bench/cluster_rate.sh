#!/usr/bin/env bash
# shellcheck shell=bash
# The cluster rate of bench/run.sh: two daemons on one PostgreSQL under one global limit.
#
#   bench/cluster_rate.sh [--quick]        standalone: the same as BENCH_ONLY=cluster bench/run.sh
#   BENCH_ONLY=cluster bench/run.sh        this part alone (bench/results/latest-cluster.md)
#   bench/run.sh [--quick]                 the full run includes it
#
# Two daemons (the release binary, instance ids cluster-a and cluster-b) send one campaign to
# smtp-sink with limits.global_per_second = 300 and global_burst = 30 for the whole cluster, for
# CLUSTER_SECS seconds (60; 20 with --quick) counted from the moment both send plus a second. Halfway,
# cluster-b is killed with SIGKILL (no drain, no deregistration) and 5 s later started again as
# cluster-b2 (a new instance, as a restart under systemd with the default HOSTNAME-PID id would be).
# Heartbeats every second (dispatch.heartbeat_secs = 1), so a dead daemon's share is free within
# 3 s of its death; leases of 5 s. Every figure comes from the attempts'
# start times (delivery_attempts.started_at: the moment a notice, its permits granted, goes to the
# transport), in python3:
#   - the busiest sliding second: the most attempts in any window [t, t + 1 s), over the whole run
#     (start-up, the kill and the restart included), against rate + burst = 330;
#   - the rate over the measured CLUSTER_SECS, leaving out the 3 s after the kill (the dead daemon's
#     share is not yet free then, by design), against the configured 300/s: within 5 %. The rate
#     over the whole measured time, gap included, is printed under the table.
# What the killed daemon sent but had not yet recorded (at most one flush, 100 ms, of its sends) has
# no attempt row and is not counted: smtp-sink keeps no record to count it from (tests/it/cluster.rs
# counts those at the relay's time).
#
# Sourced by bench/run.sh once its set-up is done (release build, bench database $url, smtp-sink on
# $sink_port with the dispatch environment exported, work directory $work, the exit trap that kills
# every pid in $pids and drops the bench database), so it shares its helpers (bn, sql, row, say, die,
# campaign) and its results file.
# shellcheck disable=SC2154  # bin, url, work, pids, mode, notes: set by bench/run.sh

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Standalone: run.sh does the set-up (build, PostgreSQL, smtp-sink) and sources this file.
  exec env BENCH_ONLY=cluster "$(dirname "$0")/run.sh" "$@"
fi

cluster_rate=300
cluster_burst=30
if [ "$mode" = quick ]; then cluster_secs=${CLUSTER_SECS:-20}; else cluster_secs=${CLUSTER_SECS:-60}; fi
cluster_gap=3   # 3 heartbeats: by then a dead daemon's share is free (heartbeat older than 2 of them)

cl_now() { date +%s.%N; }
# Sleeps until the epoch time $1 (at once if it has passed).
cl_sleep_until() {
  local s
  s=$(echo "$1 - $(cl_now)" | bc -l)
  [ "$(echo "$s > 0" | bc -l)" = 1 ] && sleep "$s"
  return 0
}
# Starts daemon $1 (its instance id) in the background; sets cl_pid.
cl_start() {
  BREACH_NOTIFIER__DISPATCH__INSTANCE_ID="$1" \
  BREACH_NOTIFIER__DISPATCH__HEARTBEAT_SECS=1 BREACH_NOTIFIER__DISPATCH__LEASE_SECS=5 \
  BREACH_NOTIFIER__DISPATCH__RESCAN_SECS=1 BREACH_NOTIFIER__DISPATCH__MAX_IN_FLIGHT=500 \
  BREACH_NOTIFIER__LIMITS__GLOBAL_PER_SECOND=$cluster_rate BREACH_NOTIFIER__LIMITS__GLOBAL_BURST=$cluster_burst \
    "$bin" run >/dev/null 2>"$work/$1.log" &
  cl_pid=$!
  pids+=("$cl_pid")
}
cl_alive() { kill -0 "$1" 2>/dev/null || { cat "$work/$2.log" >&2; die "cluster: daemon $2 died"; }; }

say "cluster: 2 daemons at $cluster_rate/s (burst $cluster_burst) for $cluster_secs s, one killed with SIGKILL halfway and restarted 5 s later"
# Nothing else may share the limit: campaigns left running by earlier parts (the rate test stops
# before its campaign ends) are cancelled.
for c in $(sql "SELECT id FROM campaigns WHERE state IN ('running', 'paused')"); do
  bn campaign cancel "$c" --reason "bench: before the cluster rate" >/dev/null 2>&1 || true
done
n_cluster=$(( cluster_rate * (cluster_secs + 15) ))
ALL_EMAIL=1 python3 examples/generate_recipients.py "$n_cluster" 15 > "$work/cluster.csv"
c_cluster=$(campaign bench/campaign.toml)
bn import --campaign "$c_cluster" "$work/cluster.csv" >/dev/null 2>&1
bn campaign start "$c_cluster" >/dev/null 2>&1

cl_start cluster-a; pid_a=$cl_pid
cl_start cluster-b; pid_b=$cl_pid
# Both up: each has an attempt.
t_wait=$(cl_now)
while [ "$(sql "SELECT count(DISTINCT instance) FROM delivery_attempts WHERE campaign_id = $c_cluster")" != 2 ]; do
  cl_alive "$pid_a" cluster-a; cl_alive "$pid_b" cluster-b
  [ "$(echo "$(cl_now) - $t_wait > 60" | bc -l)" = 1 ] && die "cluster: the daemons did not both send within 60 s"
  sleep 0.2
done
t_up=$(sql "SELECT extract(epoch FROM max(f)) FROM (SELECT min(started_at) AS f FROM delivery_attempts
            WHERE campaign_id = $c_cluster GROUP BY instance) s")
m0=$(echo "$t_up + 1" | bc -l)
m1=$(echo "$m0 + $cluster_secs" | bc -l)
cl_sleep_until "$(echo "$m0 + $cluster_secs / 2" | bc -l)"
cl_alive "$pid_b" cluster-b
kill -KILL "$pid_b"; wait "$pid_b" 2>/dev/null || true
t_kill=$(cl_now)
cl_sleep_until "$(echo "$t_kill + 5" | bc -l)"
t_restart=$(cl_now)
cl_start cluster-b2; pid_b2=$cl_pid
cl_sleep_until "$m1"
cl_alive "$pid_a" cluster-a; cl_alive "$pid_b2" cluster-b2
kill -TERM "$pid_a" "$pid_b2"; wait "$pid_a" "$pid_b2" 2>/dev/null || true
bn campaign cancel "$c_cluster" --reason "bench: cluster rate measured" >/dev/null 2>&1 || true

sql "SELECT extract(epoch FROM started_at) FROM delivery_attempts WHERE campaign_id = $c_cluster" > "$work/cluster.times"
python3 - "$work/cluster.times" "$m0" "$m1" "$t_kill" "$cluster_gap" > "$work/cluster.figures" <<'PY'
import sys
path, m0, m1, kill, gap = sys.argv[1], *map(float, sys.argv[2:])
# Microseconds, so that window edges compare exactly.
t = sorted(round(float(line) * 1e6) for line in open(path) if line.strip())
m0, m1, kill, gap = (round(x * 1e6) for x in (m0, m1, kill, gap))
# Busiest sliding second: a window holding the most can always start at one of its attempts.
best, best_at, j = 0, t[0] if t else 0, 0
for i, x in enumerate(t):
    while j < len(t) and t[j] < x + 1_000_000:
        j += 1
    if j - i > best:
        best, best_at = j - i, x
inside = [x for x in t if m0 <= x < m1]
kept = [x for x in inside if not kill <= x < kill + gap]
secs = (m1 - m0 - max(0, min(m1, kill + gap) - max(m0, kill))) / 1e6
print(best, f"{(best_at - m0) / 1e6:+.1f}", f"{len(kept) / secs:.1f}", f"{len(inside) / ((m1 - m0) / 1e6):.1f}", len(t))
# Attempts per whole second of the measured time, for the eye (fixed buckets).
print(" ".join(str(sum(1 for x in inside if m0 + k * 1_000_000 <= x < m0 + (k + 1) * 1_000_000))
               for k in range(round((m1 - m0) / 1e6))))
PY
read -r cl_busiest cl_busiest_at cl_mean cl_mean_all cl_n < "$work/cluster.figures"
cl_seconds=$(sed -n 2p "$work/cluster.figures")
[ "${cl_n:-0}" -gt 0 ] || die "cluster: no attempts to measure"
cl_offset() { printf '%+.1f' "$(echo "$1 - $m0" | bc -l)"; }
row "cluster: 2 daemons at $cluster_rate/s over $cluster_secs s (kill -9, restart)" "$cl_mean msg/s" "configured $cluster_rate/s" \
  "$(printf '%.3f' "$(echo "$cl_mean / $cluster_rate" | bc -l)")" "within 5 %"
row "cluster: busiest 1-second window" "$cl_busiest msg" "rate + burst = $(( cluster_rate + cluster_burst ))" "-" "≤ $(( cluster_rate + cluster_burst ))"
notes+=("Cluster rate: $cl_n attempts; times from the moment both daemons sent + 1 s: cluster-b killed at $(cl_offset "$t_kill") s, cluster-b2 started at $(cl_offset "$t_restart") s, end at +$cluster_secs s; busiest second from $cl_busiest_at s; the rate leaves out the $cluster_gap s after the kill, and with them is $cl_mean_all msg/s. Per second of the measured time: $cl_seconds.")
