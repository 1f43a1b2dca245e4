#!/usr/bin/env bash
# One command: set up (idempotent) and train the main method (Swift4D) on its built-in dynamic demo scene
# (8 fixed cameras x 24 frames; about 10 minutes on 2 CPU cores). Extra arguments go to `recon train`,
# e.g.  scripts/demo.sh --max-steps 500   or   scripts/demo.sh --viewer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
recon train --method swift4d --max-steps 2000 "$@"
