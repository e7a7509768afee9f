#!/usr/bin/env bash
# Installs what the tests need beyond cargo, on a fresh machine: command-line
# tools from the distribution (curl, openssl, logger, rsyslog, syslog-ng) and the pinned Python clients of
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
command -v logger > /dev/null || missing+=(bsdutils)
command -v rsyslogd > /dev/null || missing+=(rsyslog)
command -v syslog-ng > /dev/null || missing+=(syslog-ng-core)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" > /dev/null
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
