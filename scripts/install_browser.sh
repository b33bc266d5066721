#!/usr/bin/env bash
# Install Debian's chromium for the report's headless-browser test (tests/report/test_report_browser.py).
# A no-op when chromium is already there; exits 0 with a message (the test then skips) when it cannot
# install: not root, or no apt-get. Only the distribution's package is used, never a downloaded browser.
set -u
for b in /usr/bin/chromium chromium; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "install_browser: chromium already installed ($(command -v "$b"))"
    exit 0
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "install_browser: not root; skipping (install with: sudo apt-get install -y chromium)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: apt-get not found; skipping (install Debian's chromium package by hand)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq chromium; then
  echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null)"
else
  echo "install_browser: apt-get install chromium failed; the browser test will skip"
fi
exit 0
