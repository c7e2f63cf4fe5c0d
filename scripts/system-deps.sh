#!/bin/sh
# Installs the Debian packages the test suite and benchmarks use, when they are missing.
set -e
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v docker-compose >/dev/null 2>&1 || need="$need docker-compose"
command -v ffmpeg >/dev/null 2>&1 || need="$need ffmpeg"
command -v espeak-ng >/dev/null 2>&1 || need="$need espeak-ng"
# nginx -t checks docker/nginx.conf (tests/test_docker.py)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need="$need nginx-light"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing:$need (install them with your package manager; the tests that need them skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $need >/dev/null
