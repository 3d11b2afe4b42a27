#!/usr/bin/env bash
# Every run behind docs/results.md, in order, then the document itself. Resumable: re-running
# skips finished runs and evaluations and resumes interrupted ones from their last checkpoint.
# Usage: configs/paper/run.sh [CONFIG_NAME ...]   (default: all, in the order below)
set -euo pipefail
cd "$(dirname "$0")/../.."
CYB=${CYB:-cyb}
PYTHON=${PYTHON:-python}
DB=data/paper.duckdb
LOG=runs/paper.log
mkdir -p runs
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(lr-sweep variants pause-init data-efficiency hparams scratch hparams-extra)
for c in "${configs[@]}"; do
    echo "START $c $(date -u +%FT%TZ)" >> "$LOG"
    "$CYB" experiment "configs/paper/$c.toml"
    echo "END $c $(date -u +%FT%TZ)" >> "$LOG"
done
# the base model as shipped, on the same held-out slice: the "pretrained" bar of the paper's Fig. 4
"$PYTHON" - "$DB" <<'PY' || "$CYB" eval data/base --split heldout --max-chars 6000 --run-id base --db "$DB"
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
n = con.execute("SELECT count(*) FROM evals WHERE eval_id = 'base:heldout.c6000:dense' AND status = 'complete'").fetchone()[0]
sys.exit(0 if n else 1)
PY
"$CYB" results
