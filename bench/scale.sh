# shellcheck shell=bash
# The scale run of bench/run.sh: `BENCH_ONLY=scale bench/run.sh`.
#
#   SCALE_ROWS=15000000     customers in the scale campaign
#   SCALE_RUN_SECS=90       how long the daemon sends before the status reads and SIGTERM
#   SCALE_CHECKPOINT=0      1: a CHECKPOINT between `campaign start` and the daemon's launch (the
#                           reference dispatch starts from one); by default the daemon starts right
#                           after the import and pays for the import's checkpoint like a real operator
#
# Sourced by bench/run.sh once its set-up is done, so it shares the harness's helpers (bn, sql, row,
# query_ms, campaign, run_daemon, say, die), its bench database ($url: DATABASE_URL or the throwaway
# cluster, default durability), its work directory ($work) and its smtp-sink with the dispatch
# environment (20 connections). run.sh's exit trap stops the daemon, drops the bench database and
# removes $work, whatever happens here; every large file lives in $work (TMPDIR).
#
# One PostgreSQL, in this order: (1) the reference, a 200,000-message dispatch as in run.sh's dispatch
# section; (2) SCALE_ROWS customers generated (bench/generate_scale.py); (3) the reference \copy of
# that file into a table with the recipients' indexes, dropped once timed; (4) the import, timed;
# (5) `campaign start`, timed; (6) the daemon for SCALE_RUN_SECS right after (no ANALYZE by hand),
# then status reads while it still sends, then SIGTERM; (7) both exports against psql's COPY of the
# same rows and columns. The \copy runs before the import so that nothing stands between the import
# and the daemon.
# shellcheck disable=SC2154  # bin, url, work, pids, concurrency, sink_port: set by bench/run.sh

scale_rows=${SCALE_ROWS:-15000000}
scale_run_secs=${SCALE_RUN_SECS:-90}
scale_checkpoint=${SCALE_CHECKPOINT:-0}
scale_ref=200000
# shellcheck disable=SC2034  # mode: printed by run.sh in the results file
mode="scale, SCALE_ROWS=$scale_rows SCALE_RUN_SECS=$scale_run_secs SCALE_CHECKPOINT=$scale_checkpoint"
scale_t0=$(date +%s)

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
fmt() { printf "%.${2:-2}f" "$1"; }
mb() { fmt "$(echo "$1 / 1024" | bc -l)" 0; }           # KB -> MB
gb() { fmt "$(echo "$1 / 1024^3" | bc -l)" 2; }         # bytes -> GB
checkpoint() { sql "CHECKPOINT" >/dev/null 2>&1 || say "CHECKPOINT refused (not a superuser): figures noisier"; }
db_max=0
db_size() {  # db_size WHEN: remembers the bench database's largest size
  local s
  s=$(sql "SELECT pg_database_size(current_database())")
  [ "$s" -gt "$db_max" ] && db_max=$s
  say "scale: bench database $(gb "$s") GB $1"
  return 0
}
wal_bytes() { sql "SELECT sum(size) FROM pg_ls_waldir()" 2>/dev/null || echo 0; }
wal_max=0
wal_size() { local s; s=$(wal_bytes); [ -n "$s" ] && [ "$s" -gt "$wal_max" ] && wal_max=$s; return 0; }
# Runs a command under /usr/bin/time; prints "seconds peak_kb"; its output goes to $work/timed.out.
timed() {
  /usr/bin/time -f "%e %M" -o "$work/timed.time" "$@" >"$work/timed.out" 2>&1 \
    || { tail -n 20 "$work/timed.out" >&2; die "failed: $*"; }
  cat "$work/timed.time"
}
# The middle of five figures.
median5() { printf '%s\n' "$@" | sort -g | sed -n 3p; }
# "HH:MM:SS" of a duration in seconds.
hms() { printf '%d:%02d:%02d' $(( $1 / 3600 )) $(( $1 % 3600 / 60 )) $(( $1 % 60 )); }

avail=$(df -B1 --output=avail "$work" | tail -n 1)
# Per customer, from the 300,000- and 1,000,000-row development runs (2 shared cores): the database
# about 500 B at its largest, the CSV 150 B, an export file 120 B, WAL beyond max_wal_size on top; and
# about 90 us of wall time (generation 8, \copy 14, import 22, exports and their COPYs 44).
need=$(( scale_rows * 800 + 300000000 ))   # + the reference campaign, about 0.3 GB
say "scale: $scale_rows customers: about $(gb "$need") GB of disk at the peak and $(hms $(( scale_rows * 90 / 1000000 + scale_run_secs + 180 ))) (estimates); $(gb "$avail") GB free under $work"
[ "$avail" -gt "$need" ] || say "scale: WARNING: less free disk under $work than the estimate"

# 1. The reference: 200,000 messages as in run.sh's dispatch section ------------------------------------
say "scale: reference dispatch, $scale_ref messages to smtp-sink ($concurrency connections)"
ALL_EMAIL=1 python3 examples/generate_recipients.py "$scale_ref" 12 > "$work/ref.csv"
c_ref=$(campaign bench/campaign.toml)
bn import --campaign "$c_ref" "$work/ref.csv" >/dev/null 2>&1
rm -f "$work/ref.csv"
t=$(now); bn campaign start "$c_ref" >/dev/null 2>&1; ref_start_s=$(since "$t")
checkpoint
ref_t0=$(now)
read -r ref_secs ref_kb <<<"$(run_daemon "$c_ref" 1800)"
sent=$(sql "SELECT sent FROM campaign_progress WHERE campaign_id = $c_ref")
[ "$sent" = "$scale_ref" ] || die "the reference dispatch sent $sent of $scale_ref"
ref_rate=$(echo "$scale_ref / $ref_secs" | bc -l)
ref_startup=$(echo "$(sql "SELECT extract(epoch FROM min(started_at)) FROM delivery_attempts WHERE campaign_id = $c_ref") - $ref_t0" | bc -l)
say "scale: reference $(fmt "$ref_secs") s, $(fmt "$ref_rate" 0) msg/s"
row "dispatch $scale_ref messages ($concurrency conns, reference)" "$(fmt "$ref_rate" 0) msg/s" "-" "-" "the scale run's reference"

# 2. The customer list -----------------------------------------------------------------------------------
say "scale: generating $scale_rows customers"
t=$(now)
python3 bench/generate_scale.py "$scale_rows" 15 > "$work/scale.csv"
gen_s=$(since "$t")
csv_bytes=$(stat -c %s "$work/scale.csv")
say "scale: generated in $(fmt "$gen_s" 1) s, $(gb "$csv_bytes") GB"

# 3. The reference \copy into a table with the recipients' indexes (as run.sh's bench_copy) ----------------
c_scale=$(campaign bench/campaign-scale.toml)
sql "CREATE TABLE bench_copy (LIKE recipients INCLUDING DEFAULTS INCLUDING INDEXES) WITH (fillfactor = 70);
     ALTER TABLE bench_copy ADD COLUMN enrollment_code TEXT, ADD COLUMN data_exposed TEXT;
     ALTER TABLE bench_copy ALTER COLUMN campaign_id SET DEFAULT $c_scale" >/dev/null
checkpoint
say "scale: psql \\copy of the file (reference)"
read -r copy_s _ <<<"$(timed psql "$url" -X -q -c "\\copy bench_copy(customer_id, email, first_name, last_name, locale, jurisdiction, electronic_consent, address1, city, region, postal_code, country, enrollment_code, data_exposed) from '$work/scale.csv' csv header")"
db_size "after the \\copy"; wal_size
sql "DROP TABLE bench_copy" >/dev/null
checkpoint

# 4. The import --------------------------------------------------------------------------------------------
say "scale: import"
read -r import_s import_kb <<<"$(timed "$bin" import --campaign "$c_scale" "$work/scale.csv")"
grep -q "(reconciled)" "$work/timed.out" || die "the import did not reconcile: $(cat "$work/timed.out")"
t_import_end=$(now)
rm -f "$work/scale.csv"
db_size "after the import"; wal_size
import_rate=$(echo "$scale_rows / $import_s" | bc -l)
copy_rate=$(echo "$scale_rows / $copy_s" | bc -l)
say "scale: import $(fmt "$import_s" 1) s, \\copy $(fmt "$copy_s" 1) s"
row "import $scale_rows rows" "$(fmt "$import_rate" 0) rows/s" "psql \\copy $(fmt "$copy_rate" 0) rows/s" \
  "$(fmt "$(echo "$import_rate / $copy_rate" | bc -l)")" "≥ 0.70"
row "import peak memory" "$(mb "$import_kb") MB" "-" "-" "< 100 MB"

# 5. campaign start (pre-flight over the campaign's locales and jurisdictions) ---------------------------------
t=$(now)
bn campaign start "$c_scale" > "$work/start.out" 2>&1 || { cat "$work/start.out" >&2; die "campaign start failed"; }
start_s=$(since "$t")
row "campaign start at $scale_rows" "$(fmt "$start_s") s" "at $scale_ref: $(fmt "$ref_start_s") s" "-" "< 2 s"
[ "$scale_checkpoint" = 1 ] && { say "scale: CHECKPOINT before the daemon (SCALE_CHECKPOINT=1)"; checkpoint; }

# 6. The daemon, right after the import ---------------------------------------------------------------------
# What the planner knows at the launch (no ANALYZE by hand; autovacuum or the import may have run one).
stats=$(sql "SELECT CASE WHEN greatest(last_analyze, last_autoanalyze) IS NULL THEN 'never'
                         ELSE to_char(greatest(last_analyze, last_autoanalyze) AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' UTC'
                              || CASE WHEN last_autoanalyze >= coalesce(last_analyze, last_autoanalyze)
                                      THEN ' by autovacuum' ELSE ' by ANALYZE' END END
                    || ', planner estimate ' || (SELECT reltuples::bigint FROM pg_class WHERE oid = 'recipients'::regclass)
                    || ' rows'
             FROM pg_stat_user_tables WHERE relid = 'recipients'::regclass")
# pg_stat_bgwriter until PostgreSQL 16, pg_stat_checkpointer from 17.
checkpoints() {
  sql "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter" 2>/dev/null \
    || sql "SELECT num_timed + num_requested FROM pg_stat_checkpointer" 2>/dev/null || echo 0
}
ckpt_before=$(checkpoints)
autovac() {  # autovacuum and autoanalyze runs on recipients so far
  sql "SELECT autovacuum_count || ' autovacuum(s), ' || autoanalyze_count || ' autoanalyze(s)'
       FROM pg_stat_user_tables WHERE relid = 'recipients'::regclass"
}
autovac_at_launch=$(autovac)
say "scale: daemon for $scale_run_secs s ($(fmt "$(since "$t_import_end")" 1) s after the import; recipients last analysed: $stats)"
t0=$(now)
/usr/bin/time -f "%M" -o "$work/scale-daemon.mem" "$bin" run >/dev/null 2>"$work/scale-daemon.log" & tpid=$!
pids+=("$tpid")
dpid=""
for _ in $(seq 1 100); do dpid=$(pgrep -P "$tpid" || true); [ -n "$dpid" ] && break; sleep 0.05; done
[ -n "$dpid" ] || die "the daemon did not start"
pids+=("$dpid")   # run.sh's exit trap signals the daemon itself, not only /usr/bin/time
while [ "$(echo "$(since "$t0") < $scale_run_secs" | bc -l)" = 1 ]; do
  kill -0 "$tpid" 2>/dev/null || { cat "$work/scale-daemon.log" >&2; die "the daemon died"; }
  sleep 1
done
t_end=$(now)   # the rate window ends here: the status reads below take CPU from the daemon

# Status reads while it sends (median of 5 each): the CLI whole (process, connection, campaign and waves),
# and both views with psql's \timing.
say "scale: status reads"
status_cli_ms() {  # the median of 5 runs of `status ID`, in ms
  local runs=() t
  for _ in 1 2 3 4 5; do
    t=$(now)
    bn status "$c_scale" > "$work/status.out" 2>&1 || { cat "$work/status.out" >&2; die "status failed"; }
    runs+=("$(echo "($(now) - $t) * 1000" | bc -l)")
  done
  median5 "${runs[@]}"
}
status_ms=$(status_cli_ms)
progress_ms=$(query_ms "SELECT * FROM campaign_progress WHERE campaign_id = $c_scale")
waves_ms=$(query_ms "SELECT * FROM wave_progress WHERE campaign_id = $c_scale")
juris_ms=$(query_ms "SELECT * FROM jurisdiction_progress WHERE campaign_id = $c_scale")
kill -0 "$tpid" 2>/dev/null || { cat "$work/scale-daemon.log" >&2; die "the daemon died during the status reads"; }

drain=$(bn check-config 2>/dev/null | sed -n 's/^drain_secs = \([0-9]*\).*/\1/p' | head -n 1)
t=$(now)
kill -TERM "$dpid"
# Polled rather than waited for, so that a daemon that never exits is killed (drain time + 30 s).
while kill -0 "$dpid" 2>/dev/null; do
  if [ "$(echo "$(since "$t") > ${drain:-20} + 30" | bc -l)" = 1 ]; then
    say "scale: the daemon is still running $(( ${drain:-20} + 30 )) s after SIGTERM: SIGKILL"
    kill -KILL "$dpid" 2>/dev/null || true
    break
  fi
  sleep 0.02
done
term_s=$(since "$t")
daemon_rc=0; wait "$tpid" || daemon_rc=$?
[ "$daemon_rc" = 0 ] || { tail -n 20 "$work/scale-daemon.log" >&2; say "scale: the daemon exited with status $daemon_rc after SIGTERM"; }
# The same reads with the daemon stopped: what the size costs, apart from sharing two cores with it.
status_idle_ms=$(status_cli_ms)
progress_idle_ms=$(query_ms "SELECT * FROM campaign_progress WHERE campaign_id = $c_scale")
waves_idle_ms=$(query_ms "SELECT * FROM wave_progress WHERE campaign_id = $c_scale")
juris_idle_ms=$(query_ms "SELECT * FROM jurisdiction_progress WHERE campaign_id = $c_scale")
juris_rows=$(sql "SELECT count(*) FROM jurisdiction_progress WHERE campaign_id = $c_scale")
# The regulator report (docs/regulators.md), whole process, with the daemon stopped.
say "scale: report regulators"
read -r report_s report_kb <<<"$(timed "$bin" report regulators --campaign "$c_scale" --format csv)"
report_lines=$(wc -l < "$work/timed.out")
# Deadline-first claims: the first wave is a key range of the queue (every deadline in it); from the
# second wave on, every notice sent must carry the earliest deadline still queued.
read -r earliest_day rest_sent rest_later <<<"$(sql "
  WITH w1 AS (SELECT last_id FROM waves WHERE campaign_id = $c_scale AND number = 1),
       e AS (SELECT min(deadline_day) AS d FROM recipients WHERE campaign_id = $c_scale AND status = 'queued')
  SELECT e.d, count(a.id), count(a.id) FILTER (WHERE r.deadline_day > e.d)
  FROM e, w1, delivery_attempts a JOIN recipients r ON r.id = a.recipient_id
  WHERE a.campaign_id = $c_scale AND r.id > w1.last_id GROUP BY e.d" | tr '|' ' ')"
daemon_kb=$(tail -n 1 "$work/scale-daemon.mem" 2>/dev/null || true)
case "$daemon_kb" in ''|*[!0-9]*) daemon_kb=0 ;; esac
ckpt_during=$(( $(checkpoints) - ckpt_before ))
autovac_after_run=$(autovac)
db_size "after the daemon's run"; wal_size

# From delivery_attempts: start-up is the launch to the first attempt; the rate counts the attempts that
# started from the first one + 5 s to the end of the window (to the last attempt if the campaign ran out).
open=$(sql "SELECT queued + deferred FROM campaign_progress WHERE campaign_id = $c_scale")
# Two plain aggregates: a CTE read twice here (for the first attempt, then for the window) was planned
# as a nested loop that re-aggregated the attempts for every attempt.
read -r first last n_attempts <<<"$(sql "
  SELECT coalesce(extract(epoch FROM min(started_at)), 0), coalesce(extract(epoch FROM max(started_at)), 0), count(*)
  FROM delivery_attempts WHERE campaign_id = $c_scale" | tr '|' ' ')"
n_window=$(sql "SELECT count(*) FROM delivery_attempts WHERE campaign_id = $c_scale
                AND started_at >= to_timestamp($first) + interval '5 seconds' AND started_at < to_timestamp($t_end)")
if [ "$n_attempts" = 0 ]; then
  say "scale: the daemon made no attempt in $scale_run_secs s"
  row "daemon start-up at $scale_rows" "no attempt in $scale_run_secs s" "at $scale_ref: $(fmt "$ref_startup") s" "-" "< 2 s"
  row "dispatch at $scale_rows, right after the import" "0 msg/s" "at $scale_ref: $(fmt "$ref_rate" 0) msg/s" "0.00" "≥ 0.80"
else
  startup=$(echo "$first - $t0" | bc -l)
  w_end=$t_end
  [ "$open" = 0 ] && w_end=$last
  w_len=$(echo "$w_end - ($first + 5)" | bc -l)
  if [ "$(echo "$w_len > 1" | bc -l)" = 1 ]; then
    rate=$(echo "$n_window / $w_len" | bc -l)
  else
    rate=$(echo "$n_attempts / ($last - $first + 0.001)" | bc -l)
    say "scale: the rate window (first attempt + 5 s to the end) is under 1 s: rate over every attempt instead"
  fi
  say "scale: $n_attempts attempts; window of $(fmt "$w_len" 1) s from the first attempt + 5 s: $n_window"
  row "daemon start-up at $scale_rows (launch to 1st attempt)" "$(fmt "$startup") s" "at $scale_ref: $(fmt "$ref_startup") s" "-" "< 2 s"
  row "dispatch at $scale_rows, right after the import" "$(fmt "$rate" 0) msg/s" "at $scale_ref: $(fmt "$ref_rate" 0) msg/s" \
    "$(fmt "$(echo "$rate / $ref_rate" | bc -l)")" "≥ 0.80"
fi
row "status ID (CLI, during the run, median of 5)" "$(fmt "$status_ms" 0) ms" "daemon stopped: $(fmt "$status_idle_ms" 0) ms" "-" "< 50 ms"
row "campaign_progress (during the run, median of 5)" "$progress_ms ms" "daemon stopped: $progress_idle_ms ms" "-" "< 50 ms"
row "wave_progress (during the run, median of 5)" "$waves_ms ms" "daemon stopped: $waves_idle_ms ms" "-" "< 50 ms"
row "jurisdiction_progress, $juris_rows rows (during the run, median of 5)" "$juris_ms ms" "daemon stopped: $juris_idle_ms ms" "-" "< 50 ms"
row "report regulators at $scale_rows ($report_lines lines)" "$(fmt "$report_s") s, $(mb "$report_kb") MB" "-" "-" "< 30 s"
row "deadline order: sends after wave 1 with a later deadline" "${rest_later:-?} of ${rest_sent:-?}" \
  "earliest queued: day ${earliest_day:-?}" "-" "0"
row "SIGTERM to exit" "$(fmt "$term_s") s" "drain_secs ${drain:-?} s" "-" "within the drain time"
row "daemon peak memory at $scale_rows" "$(mb "$daemon_kb") MB" "at $scale_ref: $(mb "$ref_kb") MB" "-" "< 100 MB"

# 7. Exports against psql's COPY of the same rows and columns --------------------------------------------
utc() { echo "to_char($1 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"; }
evidence_sql="
  SELECT r.campaign_id, c.content_hash, r.customer_id, r.id AS recipient_id, r.channel, r.status, r.message_id,
         coalesce(l.n, 0) AS attempts, $(utc r.first_attempt_at) AS first_attempt_at,
         $(utc r.finished_at) AS finished_at, r.last_code, r.last_reply, r.fail_reason,
         r.postal_followup::text AS postal_followup, l.log AS attempt_log
  FROM recipients r
  JOIN campaigns c ON c.id = r.campaign_id
  LEFT JOIN LATERAL (
    SELECT count(*) AS n,
           string_agg(a.attempt || '@' || $(utc a.started_at) || ' ' || a.outcome || ' '
                      || coalesce(a.smtp_code::text, '-')
                      || coalesce(' ' || nullif(btrim(regexp_replace(a.reply, '[[:cntrl:]]+', ' ', 'g')), ''), ''),
                      ' | ' ORDER BY a.id) AS log
    FROM delivery_attempts a WHERE a.recipient_id = r.id) l ON true
  WHERE r.campaign_id = $c_scale
  ORDER BY r.id"
postal_sql="
  SELECT r.customer_id, r.id AS recipient_id,
         CASE WHEN r.status = 'bounced' AND r.postal_followup THEN 'email bounced after the relay accepted it'
              WHEN r.status = 'failed' AND r.postal_followup
                THEN 'email failed: ' || coalesce(r.fail_reason, 'no reason recorded')
              WHEN r.email IS NULL THEN 'no email address'
              WHEN NOT r.electronic_consent THEN 'no electronic consent'
              ELSE 'postal channel' END AS reason,
         r.first_name, r.last_name, r.address1, r.address2, r.city, r.region, r.postal_code, r.country,
         r.locale, r.jurisdiction, dl.deadline
  FROM recipients r
  LEFT JOIN campaign_deadlines dl ON dl.campaign_id = r.campaign_id AND dl.jurisdiction = coalesce(r.jurisdiction, '')
  WHERE r.campaign_id = $c_scale AND r.status <> 'cancelled'
    AND ((r.status IN ('failed', 'bounced') AND r.postal_followup) OR r.channel = 'postal' OR r.status = 'postal')
  ORDER BY dl.deadline NULLS LAST, r.id"
export_max=0
phases=()
for kind in evidence postal; do
  say "scale: export $kind"
  read -r ex_s ex_kb <<<"$(timed "$bin" export "$kind" --campaign "$c_scale" -o "$work/$kind.csv")"
  ex_lines=$(( $(wc -l < "$work/$kind.csv") - 1 ))
  ex_bytes=$(stat -c %s "$work/$kind.csv")
  [ "$ex_bytes" -gt "$export_max" ] && export_max=$ex_bytes
  rm -f "$work/$kind.csv"
  say "scale: psql COPY of the same $kind rows (reference)"
  if [ "$kind" = evidence ]; then q=$evidence_sql; else q=$postal_sql; fi
  # shellcheck disable=SC2016  # expanded by sh -c, from its arguments
  read -r ref_s _ <<<"$(timed sh -c 'psql "$1" -X -q -c "COPY ($2) TO STDOUT WITH (FORMAT csv, HEADER)" > "$3"' sh "$url" "$q" "$work/$kind-ref.csv")"
  ref_lines=$(( $(wc -l < "$work/$kind-ref.csv") - 1 ))
  rm -f "$work/$kind-ref.csv"
  [ "$ex_lines" = "$ref_lines" ] || say "scale: WARNING: export $kind wrote $ex_lines lines, the reference $ref_lines"
  say "scale: export $kind $ex_s s ($ex_lines lines), COPY $ref_s s"
  phases+=("export $kind $(fmt "$ex_s" 0) s, its COPY $(fmt "$ref_s" 0) s")
  row "export $kind, $ex_lines lines" "$(fmt "$ex_s" 1) s" "psql COPY $(fmt "$ref_s" 1) s" \
    "$(fmt "$(echo "$ex_s / $ref_s" | bc -l)" 1)x" "≤ 2x"
  row "export $kind peak memory" "$(mb "$ex_kb") MB" "-" "-" "flat, < 100 MB"
done

wal_note=""
[ "$wal_max" -gt 0 ] && wal_note=", WAL up to $(gb "$wal_max") GB"
row "disk: bench database at its largest" "$(gb "$db_max") GB" "CSV $(gb "$csv_bytes") GB, export $(gb "$export_max") GB$wal_note" "-" "stated"
scale_wall=$(( $(date +%s) - scale_t0 ))
notes+=("Scale run: $scale_rows customers generated in $(fmt "$gen_s" 0) s (bench/generate_scale.py); \\copy $(fmt "$copy_s" 0) s," \
  "import $(fmt "$import_s" 0) s, ${phases[0]}, ${phases[1]};" \
  "recipients last analysed at the daemon's launch: $stats; $ckpt_during checkpoint(s) during the daemon's run;" \
  "recipients at the daemon's launch: $autovac_at_launch; after its run: $autovac_after_run;" \
  "$n_attempts attempts in the run (status reads after the rate window); whole scale run $(hms "$scale_wall")" \
  "(the reference dispatch included).")
say "scale: done in $(hms "$scale_wall")"
