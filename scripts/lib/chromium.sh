# Shared by scripts/test (source it): headless Chromium and chromedriver for the browser test of the
# status page (tests/it/browser.rs).
#   chromium_ensure   installs Debian's chromium and chromium-driver when missing (one source package,
#                     so their versions always match), or exits saying what to install.
#
# The test drives /usr/bin/chromium through /usr/bin/chromedriver (W3C WebDriver, fantoccini) and
# fails, saying what to install, when either is missing: it never skips. Nothing here starts a
# browser; each test run starts its own chromedriver on a port it chooses and a fresh profile.
# fonts-dejavu-core gives the screenshots readable text without recommending a desktop's fonts.

_chromium_present() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}

_chromium_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "Chromium is not installed and this is not root: install it (as root: apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core)" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "Chromium is not installed and there is no apt-get here: install chromium and its matching chromedriver (/usr/bin/chromium, /usr/bin/chromedriver) with the system's package manager" >&2
    exit 1
  fi
  local log=/tmp/bn-chromium-apt.$$
  local packages="chromium chromium-driver fonts-dejavu-core"
  # shellcheck disable=SC2086  # the package list is split on purpose
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >"$log" 2>&1; then
    # A stale package index is the usual cause: refresh it once and try again.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages >>"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      echo "cannot install Chromium with apt-get (output above): install the 'chromium' and 'chromium-driver' packages" >&2
      exit 1
    fi
  fi
  rm -f "$log"
}

chromium_ensure() {
  if ! _chromium_present; then
    _chromium_install
    _chromium_present || { echo "chromium and chromium-driver were installed but /usr/bin/chromium or /usr/bin/chromedriver is missing: reinstall both packages" >&2; exit 1; }
  fi
}
