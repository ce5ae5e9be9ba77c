#!/usr/bin/env bash
# The report test opens report.html in a real headless browser: Debian's Chromium
# (package `chromium`, /usr/bin/chromium), installed here when it is missing. Needs root
# (or sudo) and the Debian package mirror; CHROMIUM=/path/to/chromium uses another build.
# When it cannot be installed this says why and the test suite still runs: only the
# report's browser test fails, with a message naming this script.
set -uo pipefail
if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "Installing Debian's chromium for the report test (apt-get) ..."
if ! { $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
         $SUDO apt-get update -qq >/dev/null 2>&1 &&
         $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; }; }; then
  echo "warning: could not install chromium (needs root or sudo and Debian's mirror);" \
       "the report's browser test will fail" >&2
fi
exit 0
