#!/usr/bin/env bash
# Installs what the tests need beyond cargo, on a fresh machine: command-line
# tools from the distribution (curl, openssl, rsyslog with omelasticsearch)
# and the pinned Python clients of tests/clients/requirements.txt in a
# virtualenv at target/test-venv (the tests run target/test-venv/bin/python). Idempotent: a second run only
# checks. Run by .ci/run and by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in curl openssl; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
# rsyslog with its omelasticsearch module: tests/elasticsearch.rs forwards
# through it to /es. (Debian's syslog-ng-core conflicts with rsyslog: one
# machine has one of the two system log daemons.)
dpkg -s rsyslog-elasticsearch > /dev/null 2>&1 || missing+=(rsyslog rsyslog-elasticsearch)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
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
