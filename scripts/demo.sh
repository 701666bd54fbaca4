#!/usr/bin/env bash
# The README's first command: set up, build, and run the quickstart demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
"${BUILD_DIR:-build}/portcullis" demo
