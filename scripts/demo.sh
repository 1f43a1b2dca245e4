#!/usr/bin/env bash
# One command: set up (idempotent) and train the main method (Swift4D) on its built-in dynamic demo scene
# (16 fixed cameras x 24 frames at 96 px, camera 0 held out; 2200 steps, densification over the first 35 % of
# them (the default is half the run), which keeps about 31k Gaussians and the run under 4 min on 2 idle cores;
# docs/benchmarks.md, "The demo"). It ends with the held-out camera's PSNR, the PSNR of the moving part,
# and the command that opens the run in the browser viewer.
# Extra arguments go to `recon train`, e.g.  scripts/demo.sh --max-steps 500   or   scripts/demo.sh --viewer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO"
run_dir=$(recon train --method swift4d --max-steps 2200 --model.densify.refine-stop 0.35 "$@" | tail -n 1)
echo
echo "demo: run in $run_dir (metrics.json; renders/test holds the held-out camera's frames beside the ground truth)"
echo "demo: look at it with"
echo "  source .venv/bin/activate && recon view $run_dir"
