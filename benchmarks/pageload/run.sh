#!/bin/sh
# Remote page-load benchmark; see README.md. Runs as root (network namespaces), with the
# project's virtualenv (twist, h2, brotli): ./run.sh --rounds 5
set -e
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$VIRTUAL_ENV" ] && [ -f "$here/../../.venv/bin/activate" ]; then
    . "$here/../../.venv/bin/activate"
fi
exec python "$here/run.py" "$@"
