#!/usr/bin/env bash
# Runs tests/python/remit_client.py against a gateway with stubs generated
# from proto/remit/v1/remittances.proto by grpcio-tools.
#
#   tests/python/run_client.sh --url 127.0.0.1:8100 --key KEY \
#       --source-country US --source-currency USD \
#       --destination-country PH --destination-currency PHP --amount 100.00
#
# Makes (or reuses) a venv in ${CARGO_TARGET_DIR:-target}/python-venv (a
# relative path is taken from the workspace root), installs grpcio,
# grpcio-tools and protobuf from PyPI into it when they are missing,
# generates the stubs into <venv>/stubs/remit/v1/ and runs the client with
# the remaining arguments. Stdout is the client's one JSON object; progress
# goes to stderr.
#
# Exit status: the client's (0 completed, 1 otherwise), or 90 when python3,
# the venv or the packages cannot be had (e.g. no network): the Rust test
# tests/tests/python_client.rs then skips.
set -euo pipefail

SKIP=90
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="${CARGO_TARGET_DIR:-target}/python-venv"
case "$venv" in
/*) ;;
*) venv="$root/$venv" ;;
esac
stubs="$venv/stubs"

skip() {
    echo "run_client.sh: $*; skipping (exit $SKIP)" >&2
    exit "$SKIP"
}

command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "run_client.sh: creating the venv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" >&2; then
        rm -rf "$venv"
        skip "python3 -m venv $venv failed"
    fi
fi
python="$venv/bin/python"

if ! "$python" -c 'import grpc, grpc_tools.protoc, google.protobuf' >/dev/null 2>&1; then
    echo "run_client.sh: installing grpcio grpcio-tools protobuf into $venv" >&2
    if ! "$python" -m pip install --quiet grpcio grpcio-tools protobuf >&2; then
        skip "pip install grpcio grpcio-tools protobuf failed (no network?)"
    fi
fi

# Regenerated every run (it takes well under a second), so the stubs always
# match the proto. With -I proto the modules land in remit/v1/ and
# remittances_pb2_grpc.py imports `from remit.v1 import remittances_pb2`, so
# remit/ and remit/v1/ are made packages and <stubs> goes on sys.path.
rm -rf "$stubs"
mkdir -p "$stubs"
"$python" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" \
    proto/remit/v1/remittances.proto
touch "$stubs/remit/__init__.py" "$stubs/remit/v1/__init__.py"

exec "$python" "$root/tests/python/remit_client.py" --stubs "$stubs" "$@"
