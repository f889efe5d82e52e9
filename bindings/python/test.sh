#!/usr/bin/env bash
# The Python package's checks, as CI runs them (.ci/run): a venv with the pinned tools
# (requirements.lock, hashes required), the package built and installed from this
# directory, ruff (lint + format), then pytest against the real brokers.
# Needs the workspace's binaries (built here too, as scripts/test builds them) and Mosquitto
# (scripts/test installs it). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
venv="${SEALPOST_PY_VENV:-$repo/target/python-venv}"

python3 -m venv "$venv"
# maturin's build backend runs the `maturin` command: the venv's.
export PATH="$venv/bin:$PATH"
"$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements.lock
# --no-build-isolation: build with the maturin pinned above; --no-deps: paho-mqtt is too.
# The tests build the extension in the dev profile, in the workspace's target directory:
# its dependencies are the workspace's (same Cargo.lock versions, same features through
# workspace-hack, opt-level 3 as in the root profile), so the build reuses what
# `cargo test --workspace` compiled instead of a release tree of its own (about 10 minutes
# of CI on two cores). `pip install ./bindings/python` without these builds for release.
CARGO_TARGET_DIR="$repo/target" MATURIN_PEP517_ARGS="--profile dev" \
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps .

"$venv/bin/ruff" check python tests bench
"$venv/bin/ruff" format --check python tests bench

(cd "$repo" && cargo build --locked --bins -p sealpost-cli -p sealpost-broker -p sealpost-tests)

# pytest's exit codes: 0 all passed; 1 failures; 2-4 interrupted or usage errors; 5 no
# test collected, which here means the suite is broken, not that there is nothing to do.
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "bindings/python/test.sh: pytest collected no tests" >&2
fi
exit "$status"
