#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/test-deps.sh),
# then runs every test of the workspace. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
exec cargo test --workspace "$@"
