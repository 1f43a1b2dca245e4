#!/usr/bin/env bash
# One command: set up (idempotent) and train the main method on its built-in demo scene.
# Extra arguments go to `recon train`, e.g.  scripts/demo.sh --max-steps 500
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
recon train --method gs "$@"
