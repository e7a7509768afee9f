#!/usr/bin/env bash
# Installs what the tests need beyond cargo, on a fresh machine: command-line
# tools from the distribution (curl, openssl, logger, rsyslog with its
# omelasticsearch module, syslog-ng) and the pinned Python clients of
# tests/clients/requirements.txt in a virtualenv at target/test-venv (the
# tests run target/test-venv/bin/python). Idempotent: a second run only
# checks. Run by .ci/run and by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in curl openssl; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
# Syslog clients (tests/syslog.rs): logger, rsyslogd and syslog-ng run as
# foreground processes of the tests; their system services are not started.
# rsyslog's omelasticsearch module forwards to /es in tests/elasticsearch.rs.
command -v logger > /dev/null || missing+=(bsdutils)
command -v rsyslogd > /dev/null || missing+=(rsyslog)
dpkg -s rsyslog-elasticsearch > /dev/null 2>&1 || missing+=(rsyslog-elasticsearch)
# syslog-ng's package conflicts with rsyslog's (both provide the system
# logger), so it is not installed but unpacked into target/syslog-ng, with
# the libraries it links installed; tests/syslog.rs runs it from there.
syslog_ng=target/syslog-ng
syslog_ng_libraries=(libivykis0 libnet1 libjson-c5 libpcre3 libwrap0 libglib2.0-0 libcap2)
if ! command -v syslog-ng > /dev/null && [ ! -x "$syslog_ng/usr/sbin/syslog-ng" ]; then
  missing+=("${syslog_ng_libraries[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" > /dev/null
fi
if ! command -v syslog-ng > /dev/null && [ ! -x "$syslog_ng/usr/sbin/syslog-ng" ]; then
  echo "test-deps: unpacking syslog-ng-core into $syslog_ng"
  download=$(mktemp -d)
  (cd "$download" && apt-get download -qq syslog-ng-core 2> /dev/null)
  mkdir -p "$syslog_ng"
  dpkg -x "$download"/syslog-ng-core_*.deb "$syslog_ng"
  rm -rf "$download"
fi

venv=target/test-venv
requirements=tests/clients/requirements.txt
stamp=$venv/.requirements
if ! cmp -s "$requirements" "$stamp" 2> /dev/null; then
  echo "test-deps: installing the Python clients into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
