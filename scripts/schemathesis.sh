#!/usr/bin/env bash
# Runs schemathesis (an OpenAPI-driven fuzzer, from PyPI) against a remit
# gateway's wallet API:
#
#   scripts/schemathesis.sh run http://127.0.0.1:9100/openapi.json \
#       --checks all -H 'X-Api-Key: KEY' --max-examples 20
#
# Makes (or reuses) a venv in ${CARGO_TARGET_DIR:-target}/schemathesis-venv
# (a relative path is taken from the workspace root) and installs the pinned
# schemathesis into it when it is missing; every argument goes to the
# `schemathesis` command. `scripts/schemathesis.sh --install-only` only
# prepares the venv.
#
# Exit status: schemathesis's own, or 90 when python3, the venv or the
# package cannot be had (e.g. no network): tests/tests/openapi_contract.rs
# then skips (and fails when CI is set).
set -euo pipefail

SKIP=90
VERSION="4.32.5"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CARGO_TARGET_DIR:-target}/schemathesis-venv"
case "$venv" in
/*) ;;
*) venv="$root/$venv" ;;
esac

skip() {
    echo "schemathesis.sh: $*; skipping (exit $SKIP)" >&2
    exit "$SKIP"
}

command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "schemathesis.sh: creating the venv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >&2; then
        rm -rf "$venv"
        skip "python3 -m venv $venv failed"
    fi
fi
python="$venv/bin/python"

installed="$("$python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)"
if [[ "$installed" != "$VERSION" ]]; then
    echo "schemathesis.sh: installing schemathesis==$VERSION into $venv" >&2
    if ! "$python" -m pip install --quiet "schemathesis==$VERSION" >&2; then
        skip "pip install schemathesis==$VERSION failed (no network?)"
    fi
fi

if [[ "${1:-}" == "--install-only" ]]; then
    exit 0
fi
exec "$venv/bin/schemathesis" "$@"
