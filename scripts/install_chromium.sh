#!/usr/bin/env bash
# The report test opens report.html in a real headless browser: Debian's Chromium
# (package `chromium`, /usr/bin/chromium), installed here when it is missing. Needs root
# (or sudo) and the Debian package mirror; set CHROMIUM=/path/to/chromium to use another
# build. Without a browser, that one test fails and says so.
set -euo pipefail
if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "Installing Debian's chromium for the report test (apt-get) ..."
$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null
