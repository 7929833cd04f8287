# Shared by scripts/test (source it): Postfix for the end-to-end bounce tests (tests/it/postfix_*.rs).
#   postfix_ensure   installs Postfix when missing, then exports POSTFIX_SBIN (the folder holding
#                    postfix, postconf, postsuper, postqueue, master), or exits saying what to install.
#
# Only the binaries are wanted: each test starts a private instance of its own (own main.cf,
# master.cf, queue, loopback port; see tests/it/common/postfix.rs) and stops it afterwards. The
# package is installed with debconf's "No configuration", so it writes no /etc/postfix/main.cf,
# starts no system instance and leaves the machine's mail setup alone; a system Postfix that was
# already running is left as it is (the tests never use port 25 or /etc/postfix).
#
# Root: the tests must run as root (they do here, and in CI). Postfix's master starts as root and
# its daemons drop to mail_owner ('postfix', created by the package); pipe(8) refuses to run a
# command as root, so the bounce command runs as an unprivileged user (see the Rust module). As
# another user, 'postfix' refuses ("the postfix command is reserved for the superuser") and
# 'postqueue -c DIR' demands that DIR be listed in /etc/postfix/main.cf's
# alternate_config_directories; the Postfix tests then fail at once saying "must run as root", they
# do not skip. Installing needs root too: without it, this stops and says what to install.

POSTFIX_SBIN=""

_postfix_find_sbin() {
  local dir
  for dir in "${POSTFIX_SBIN_HINT:-}" /usr/sbin /usr/local/sbin /sbin; do
    [ -n "$dir" ] || continue
    if [ -x "$dir/postfix" ] && [ -x "$dir/postconf" ] && [ -x "$dir/postsuper" ]; then
      printf '%s' "$dir"; return 0
    fi
  done
  return 1
}

_postfix_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "Postfix is not installed and this is not root: install it (as root: echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix)" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null || ! command -v debconf-set-selections >/dev/null; then
    echo "Postfix is not installed and there is no apt-get here: install Postfix (3.x, with postfix, postconf, postsuper, postqueue in /usr/sbin) with the system's package manager, without enabling a system instance" >&2
    exit 1
  fi
  # "No configuration": the package neither writes /etc/postfix/main.cf nor starts a system instance.
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >/tmp/bn-postfix-apt.$$ 2>&1; then
    # A stale package index is the usual cause: refresh it once and try again.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >>/tmp/bn-postfix-apt.$$ 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >>/tmp/bn-postfix-apt.$$ 2>&1; then
      cat /tmp/bn-postfix-apt.$$ >&2; rm -f /tmp/bn-postfix-apt.$$
      echo "cannot install Postfix with apt-get (output above): install the 'postfix' package (debconf: No configuration)" >&2
      exit 1
    fi
  fi
  rm -f /tmp/bn-postfix-apt.$$
  # Belt and braces: should the package have started a system instance anyway (a preseed ignored,
  # an older main.cf left from a purge), stop it, as nothing of ours wants one on port 25.
  if "$1"/postfix status >/dev/null 2>&1; then
    "$1"/postfix stop >/dev/null 2>&1 || true
  fi
}

postfix_ensure() {
  local sbin
  if ! sbin=$(_postfix_find_sbin); then
    _postfix_install /usr/sbin
    sbin=$(_postfix_find_sbin) || { echo "Postfix was installed but postfix/postconf/postsuper are not in /usr/sbin: install the 'postfix' package" >&2; exit 1; }
  fi
  if ! id postfix >/dev/null 2>&1 || ! getent group postdrop >/dev/null 2>&1; then
    echo "Postfix is installed but the 'postfix' user or the 'postdrop' group is missing: reinstall the 'postfix' package (apt-get install --reinstall postfix)" >&2
    exit 1
  fi
  POSTFIX_SBIN=$sbin
  export POSTFIX_SBIN
}
