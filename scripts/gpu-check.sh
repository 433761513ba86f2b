#!/usr/bin/env bash
# The GPU check's entry (`npm run gpu:check -- ...`; on the GPU machine, which has no
# Node.js: `bash scripts/gpu-check.sh --out DIR`). Where gpu-pack/payload.tar.xz was carried
# and not yet unpacked, unpacks it over the working tree (Node.js, the built JavaScript, the
# runtime packages, the CUDA build), then runs scripts/gpu-check.mjs with that Node.js, or
# with the one on PATH. See scripts/gpu-check.mjs for what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

pack=gpu-pack/payload.tar.xz
if [ -f "$pack" ] && [ ! -f gpu-pack/.unpacked ]; then
    started=$(date +%s)
    if tar --version >/dev/null 2>&1 && xz --version >/dev/null 2>&1; then
        tar -xJf "$pack"
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(".")' "$pack"
    fi
    date +%s > gpu-pack/.unpacked
    echo "gpu-check: unpacked $pack in $(( $(date +%s) - started )) s" >&2
fi

node_bin=gpu-pack/node/bin/node
if [ ! -x "$node_bin" ]; then
    node_bin=$(command -v node || true)
fi
if [ -z "$node_bin" ]; then
    echo "gpu-check: error: no Node.js here and none carried; run \`npm run gpu:check -- --pack\` on a machine with Node.js and carry gpu-pack/" >&2
    exit 2
fi
exec "$node_bin" scripts/gpu-check.mjs "$@"
