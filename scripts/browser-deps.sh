#!/usr/bin/env bash
# Installs what the browser test (tests/test_serve.py) needs: Debian's chromium and
# chromium-driver. Only as root with apt-get; otherwise it says so and the test skips with the
# reason. Never fails `make test`.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser test will skip: chromium/chromedriver missing and not root with apt-get" \
         "(install the Debian packages chromium and chromium-driver)"
    exit 0
fi
echo "installing chromium and chromium-driver for the browser test (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "browser test will skip: apt-get could not install chromium chromium-driver"
fi
exit 0
