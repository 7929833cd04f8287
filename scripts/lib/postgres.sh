# Shared by scripts/test and bench/run.sh (source it): a throwaway PostgreSQL cluster.
#   pg_throwaway_start [extra server options…]   sets PG_THROWAWAY_URL, or exits with what to install
#   pg_throwaway_stop                            stops and removes it (safe to call twice)
# PostgreSQL refuses to run as root, so as root the server runs as the 'postgres' user.

PG_THROWAWAY_DIR=""
PG_THROWAWAY_URL=""
_pg_ctl_bin=""

_pg_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

_pg_find_bin() {
  local found
  found=$(command -v "$1" 2>/dev/null || true)
  [ -n "$found" ] || found=$(ls -1 /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)
  printf '%s' "$found"
}

pg_throwaway_start() {
  local initdb_bin port candidate
  initdb_bin=$(_pg_find_bin initdb)
  _pg_ctl_bin=$(_pg_find_bin pg_ctl)
  if [ -z "$initdb_bin" ] || [ -z "$_pg_ctl_bin" ]; then
    echo "no initdb/pg_ctl found: install PostgreSQL (apt-get install postgresql) or set DATABASE_URL=postgres://USER@HOST:PORT/DB" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "running as root, and PostgreSQL refuses to run as root: create a 'postgres' user (apt-get install postgresql does) or set DATABASE_URL" >&2
    exit 1
  fi
  PG_THROWAWAY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/bn-pg.XXXXXX")
  chmod 755 "$PG_THROWAWAY_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_THROWAWAY_DIR"
  port=""
  for _ in $(seq 1 50); do
    candidate=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
  done
  [ -n "$port" ] || { echo "no free TCP port found for the throwaway PostgreSQL" >&2; exit 1; }
  _pg_as_postgres "$initdb_bin" -D "$PG_THROWAWAY_DIR/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$PG_THROWAWAY_DIR/initdb.log" 2>&1 \
    || { cat "$PG_THROWAWAY_DIR/initdb.log" >&2; echo "initdb failed (log above)" >&2; exit 1; }
  _pg_as_postgres "$_pg_ctl_bin" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/server.log" -w -t 60 \
    -o "-p $port -k $PG_THROWAWAY_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 $*" start >/dev/null \
    || { cat "$PG_THROWAWAY_DIR/server.log" >&2; echo "pg_ctl start failed (log above)" >&2; exit 1; }
  PG_THROWAWAY_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_throwaway_stop() {
  if [ -n "$PG_THROWAWAY_DIR" ]; then
    _pg_as_postgres "$_pg_ctl_bin" -D "$PG_THROWAWAY_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_THROWAWAY_DIR"
    PG_THROWAWAY_DIR=""
  fi
}
