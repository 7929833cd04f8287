# Sourced by bench/run.sh (BENCH_ONLY=bounces): asynchronous bounces at size. A campaign of
# $n_bounce_recipients recipients, all sent; $n_reports DSNs (90% failed 5.1.1, 5% delayed, 5% automatic
# replies), each naming one recipient by our Message-ID, written to a Maildir; then `bounce process`
# stores the Maildir (500 per transaction) and processes every report. Then the same dispatch twice, once
# alone and once while another $n_reports reports are stored and processed beside it.
# Needs run.sh's bn, sql, row, run_daemon, $work, $bin and the smtp-sink exports.

if [ "$mode" = quick ]; then
  n_bounce_recipients=200000; n_reports=20000; n_bounce_dispatch=20000
else
  n_bounce_recipients=1000000; n_reports=100000; n_bounce_dispatch=50000
fi

# Writes $3 DSN files into Maildir $1 for recipients of campaign $2, every tenth from offset $4.
write_maildir() {
  local dir=$1 campaign=$2 count=$3 offset=$4
  mkdir -p "$dir/new" "$dir/cur" "$dir/tmp"
  sql "SELECT id FROM recipients WHERE campaign_id = $campaign ORDER BY id" \
    | python3 -c '
import sys
dir, campaign, count, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = [int(l) for l in sys.stdin if l.strip()][offset::10][:count]
for n, rid in enumerate(ids):
    mid = "<bn.%s.%d.bench@example.com>" % (campaign, rid)
    if n % 20 == 18:
        body = ("From: someone@example.net\r\nTo: bounce@bounces.example.com\r\nSubject: Out of office\r\n"
                "Auto-Submitted: auto-replied\r\nIn-Reply-To: %s\r\nMessage-ID: <ooo.%d@example.net>\r\n\r\n"
                "Away until Monday.\r\n" % (mid, rid))
    else:
        action, status = ("delayed", "4.4.7") if n % 20 == 19 else ("failed", "5.1.1")
        body = ("From: MAILER-DAEMON@relay.example.net\r\nTo: bounce@bounces.example.com\r\n"
                "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn.%d.%s@relay.example.net>\r\n"
                "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
                "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
                "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.net\r\n\r\n"
                "Final-Recipient: rfc822; user%d@example.net\r\nAction: %s\r\nStatus: %s\r\n"
                "Diagnostic-Code: smtp; 550 %s <user%d@example.net>: refused\r\n\r\n"
                "--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: %s\r\nSubject: Notice of Data Breach\r\n\r\n"
                "Dear customer, the notice text the redaction removes.\r\n--B--\r\n"
                % (rid, dir[-6:], rid, action, status, status, rid, mid))
    open("%s/new/%d.bench" % (dir, n), "w").write(body)
' "$dir" "$campaign" "$count" "$offset"
}

say "bounces: $n_bounce_recipients recipients sent, $n_reports reports in a Maildir"
ALL_EMAIL=1 python3 examples/generate_recipients.py "$n_bounce_recipients" 21 > "$work/bounce.csv"
c_bounce=$(campaign bench/campaign.toml)
bn import --campaign "$c_bounce" "$work/bounce.csv" >/dev/null 2>&1
sql "UPDATE recipients SET status = 'sent', finished_at = now(), first_attempt_at = now(),
     message_id = '<bn.' || campaign_id || '.' || id || '.bench@example.com>'
     WHERE campaign_id = $c_bounce" >/dev/null
sql "VACUUM (ANALYZE) recipients" >/dev/null
write_maildir "$work/maildir1" "$c_bounce" "$n_reports" 0
sql "CHECKPOINT" >/dev/null 2>&1 || true
BREACH_NOTIFIER__BOUNCES__MAILDIR="$work/maildir1" /usr/bin/time -f "%e %M" -o "$work/bounce.time" \
  "$bin" bounce process > "$work/bounce.out"
read -r bounce_secs bounce_kb < "$work/bounce.time"
read_secs=$(sed -n 's/^read the Maildir in \([0-9.]*\) s.*/\1/p' "$work/bounce.out")
process_secs=$(sed -n 's/^processed in \([0-9.]*\) s/\1/p' "$work/bounce.out")
grep -q "^read the Maildir in .*: $n_reports reports stored" "$work/bounce.out" || die "bounces: $(cat "$work/bounce.out")"
bounced=$(sql "SELECT bounced FROM campaign_progress WHERE campaign_id = $c_bounce")
expected=$(( n_reports * 18 / 20 ))
[ "$bounced" -ge $(( expected - 1 )) ] && [ "$bounced" -le $(( expected + 1 )) ] || die "bounces: $bounced bounced, expected $expected"
row "bounce Maildir read, $n_reports reports ($n_bounce_recipients recipients)" "$(printf '%.0f reports/s' "$(echo "$n_reports / $read_secs" | bc -l)")" "-" "-" "-"
row "bounce processing (parse, classify, match, apply)" "$(printf '%.0f reports/s' "$(echo "$n_reports / $process_secs" | bc -l)")" "-" "-" "-"
row "bounce ingest end to end, Maildir to bounced" "$(printf '%.0f reports/s' "$(echo "$n_reports / $bounce_secs" | bc -l)")" "target 2,000 reports/s" \
  "$(printf '%.2f' "$(echo "$n_reports / $bounce_secs / 2000" | bc -l)")" "≥ 1.00"
row "bounce process peak memory" "$(printf '%.0f MB' "$(echo "$bounce_kb / 1024" | bc -l)")" "-" "-" "< 100 MB"

# Dispatch alone, then beside the processing of another set of reports.
say "bounces: dispatch of $n_bounce_dispatch alone and beside bounce processing"
ALL_EMAIL=1 python3 examples/generate_recipients.py "$n_bounce_dispatch" 22 > "$work/bounce-dispatch.csv"
write_maildir "$work/maildir2" "$c_bounce" "$n_reports" 5
for beside in no yes; do
  c=$(campaign bench/campaign.toml)
  bn import --campaign "$c" "$work/bounce-dispatch.csv" >/dev/null 2>&1
  bn campaign start "$c" >/dev/null 2>&1
  sql "CHECKPOINT" >/dev/null 2>&1 || true
  if [ "$beside" = yes ]; then
    BREACH_NOTIFIER__BOUNCES__MAILDIR="$work/maildir2" "$bin" bounce process > "$work/bounce2.out" 2>&1 & beside_pid=$!
  fi
  read -r secs _ <<<"$(run_daemon "$c" 1800)"
  if [ "$beside" = yes ]; then
    wait "$beside_pid" || die "bounce process beside the dispatch failed: $(cat "$work/bounce2.out")"
    with_secs=$secs
  else
    alone_secs=$secs
  fi
done
alone_rate=$(echo "$n_bounce_dispatch / $alone_secs" | bc -l)
with_rate=$(echo "$n_bounce_dispatch / $with_secs" | bc -l)
row "dispatch $n_bounce_dispatch while $n_reports bounces are processed" "$(printf '%.0f msg/s' "$with_rate")" \
  "$(printf 'alone %.0f msg/s' "$alone_rate")" "$(printf '%.2f' "$(echo "$with_rate / $alone_rate" | bc -l)")" "≥ 0.80"
