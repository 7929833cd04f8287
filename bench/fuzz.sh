#!/usr/bin/env bash
# Runs the cargo fuzz targets (fuzz/fuzz_targets/) for a fixed time each and prints one line per target:
#   PASS fuzz csv_intake 60 s: 61234 runs, no crash
#
#   bench/fuzz.sh [SECONDS]      default 60 s per target; FUZZ_TARGETS="csv_intake" to run one
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags are nightly-only) and cargo-fuzz, installed
# here with `cargo install cargo-fuzz` if missing. Seeds: the hostile CSV corpus and the example list.
# A crash leaves its input in fuzz/artifacts/TARGET/ and the script exits 1; reproduce it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${FUZZ_TARGETS:-"csv_intake template_render bounce_parse"}

die() { echo "fuzz: $*" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 \
  || die "the nightly toolchain is missing (rustup toolchain install nightly)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "-- installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked -q || die "cargo install cargo-fuzz failed"
fi

echo "-- building fuzz targets (nightly, sanitizer build; minutes the first time)" >&2
cargo +nightly fuzz build -s address >/dev/null 2>&1 || cargo +nightly fuzz build -s address \
  || die "the fuzz targets do not build"

work=$(mktemp -d "${TMPDIR:-/tmp}/bn-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# csv_intake reads one flag byte, then the file: seed with each corpus file behind a 0 byte.
mkdir -p "$work/csv_intake" "$work/template_render" "$work/bounce_parse"
for f in tests/hostile/csv/*.csv; do
  { printf '\0'; cat "$f"; } > "$work/csv_intake/$(basename "$f")"
done
{ printf '\1'; head -n 50 examples/recipients.csv; } > "$work/csv_intake/example-head.csv"
# bounce_parse starts from the vendored sisimai reports.
cp tests/fixtures/bounces/sisimai/*.eml "$work/bounce_parse/"

failed=0
for t in $targets; do
  log="$work/$t.log"
  # -max_len keeps units small enough for ~1,000 runs/s; -timeout makes a hang a failure.
  if cargo +nightly fuzz run -s address "$t" "$work/$t" -- \
       -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "PASS fuzz $t $seconds s: ${runs:-?} runs, no crash"
  else
    failed=1
    echo "FAIL fuzz $t $seconds s: $(grep -a -m1 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" || echo 'see log')"
    grep -a -A3 'panicked at' "$log" | head -8 >&2 || true
    ls fuzz/artifacts/"$t"/ >&2 2>/dev/null || true
  fi
done
exit "$failed"
