"""Lookups over the stored evaluations for the app and the command line (one row per
evaluation; the per-token queries live in analysis.queries)."""

from __future__ import annotations


def list_evals(con):
    """Complete evaluations with their run's settings, newest first (a DataFrame)."""
    return con.execute(
        "SELECT e.eval_id, e.run_id, e.dataset, e.mode, r.variant, r.recipe, r.w_max, e.n_tokens, e.ppl, "
        "e.mean_expected_pauses, e.positions, e.created_at FROM evals e LEFT JOIN runs r USING (run_id) "
        "WHERE e.status = 'complete' ORDER BY e.created_at DESC, e.eval_id"
    ).df()
