#!/usr/bin/env bash
# One command: set up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
python -m pytest -q -p no:cacheprovider "$@"
