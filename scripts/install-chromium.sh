#!/usr/bin/env bash
# Install Debian's chromium for the report browser test (src/report/report.test.ts).
# Idempotent: does nothing when a chromium is already on PATH. Installs only when
# running as root on Debian, from Debian's own apt sources; otherwise it says why
# it did not and exits 0 (the browser test then skips itself).
set -euo pipefail

for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "install-chromium: $b already installed at $(command -v "$b")"
    exit 0
  fi
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium: not installed: not running as root (the browser test will be skipped)"
  exit 0
fi

if ! [ -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: not installed: not a Debian system with apt-get (the browser test will be skipped)"
  exit 0
fi

echo "install-chromium: installing chromium from Debian's apt sources"
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
  echo "install-chromium: installed $(command -v chromium || echo chromium)"
else
  echo "install-chromium: not installed: apt-get failed (the browser test will be skipped)"
fi
exit 0
