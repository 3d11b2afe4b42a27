"""Queries over whole runs and evaluations, read from the summaries stored with each
evaluation (analysis.summaries), never from its token rows (one row per run or evaluation), as opposed to the
per-token queries of analysis.queries, which re-exports these under the same names.

Values are bound parameters; every function takes a DuckDB connection and returns a DataFrame.
"""

from __future__ import annotations

import json

import pandas as pd

from .store import StoreError


def run_summary(con, dataset: str | None = None, mode: str | None = None) -> pd.DataFrame:
    """Perplexity and pause use per complete evaluation, with the run's settings."""
    return con.execute(
        """SELECT e.eval_id, e.run_id, r.variant, r.recipe, r.w_max, r.train_tokens, e.dataset, e.mode,
                  e.n_tokens, e.ppl, e.mean_expected_pauses, e.positions, a.mean_greedy_pauses,
                  a.mean_observed_pauses,
                  a.accuracy, e.created_at
           FROM evals e LEFT JOIN runs r USING (run_id)
           LEFT JOIN (SELECT eval_id, sum(sum_greedy) / sum(n) AS mean_greedy_pauses,
                             sum(sum_pauses) / nullif(sum(n_pauses), 0) AS mean_observed_pauses,
                             sum(n_correct) / sum(n) AS accuracy
                      FROM class_stats GROUP BY eval_id) a USING (eval_id)
           WHERE e.status = 'complete' AND (?::VARCHAR IS NULL OR e.dataset = ?) AND (?::VARCHAR IS NULL OR e.mode = ?)
           ORDER BY e.dataset, e.mode, e.ppl""",
        [dataset, dataset, mode, mode],
    ).df()


def frontier(con, dataset: str, token_class: str | None = None) -> pd.DataFrame:
    """Quality against compute: per complete evaluation of `dataset` (every mode), the mean nll
    and perplexity of its rows (of one token class, or all) and its positions per real token
    there (1 + mean pauses in context; dense: W), with the run's variant, seed and arm (its id
    without the seed suffix -sN, so the seeds of one setting share an arm)."""
    return con.execute(
        """SELECT e.eval_id, e.run_id, regexp_replace(e.run_id, '-s[0-9]+$', '') AS arm,
                  r.variant, r.recipe, coalesce(r.w_max, 1) AS w_max, r.seed, e.mode,
                  sum(c.n)::BIGINT AS n, sum(c.sum_nll) / sum(c.n) AS nll,
                  exp(sum(c.sum_nll) / sum(c.n)) AS ppl,
                  coalesce(1 + sum(c.sum_pauses) / nullif(sum(c.n_pauses), 0),
                           any_value(coalesce(r.w_max, 1))) AS positions
           FROM evals e JOIN class_stats c USING (eval_id) LEFT JOIN runs r USING (run_id)
           WHERE e.status = 'complete' AND e.dataset = ?
                 AND (?::VARCHAR IS NULL OR c.token_class = ?::VARCHAR)
           GROUP BY ALL ORDER BY arm, e.mode, r.seed""",
        [dataset, token_class, token_class],
    ).df()


def run_rows(con) -> pd.DataFrame:
    """Every stored run: run_id, params (its settings as JSON), seed, base and run_status."""
    return con.execute(
        "SELECT run_id, params, seed, base, status AS run_status FROM runs ORDER BY run_id"
    ).df()


def training_curves(con, run_ids: list[str] | None = None) -> pd.DataFrame:
    """train_log rows (step, tokens_seen, loss, lr, mean_expected_pauses, elapsed_s) with the variant."""
    if run_ids:
        known = {
            r[0]
            for r in con.execute(
                "SELECT run_id FROM runs WHERE list_contains(?, run_id)", [list(run_ids)]
            ).fetchall()
        }
        if missing := [r for r in run_ids if r not in known]:
            raise StoreError(f"unknown run id(s): {', '.join(missing)}")
    return con.execute(
        """SELECT l.run_id, r.variant, r.w_max, l.step, l.tokens_seen, l.loss, l.lr, l.mean_expected_pauses, l.elapsed_s
           FROM train_log l LEFT JOIN runs r USING (run_id)
           WHERE ?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], l.run_id) ORDER BY l.run_id, l.step""",
        [list(run_ids) if run_ids else None] * 2,
    ).df()


def eval_classes(con) -> pd.DataFrame:
    """Per complete evaluation: how many of its rows predict each token class (n_answer,
    n_synthetic, n_natural; n_unclassed for rows stored before schema v2) and its pauses on
    answer tokens against the rest: answer_pauses and other_pauses (mean expected pauses),
    answer_pause_rate (share of answer tokens with greedy pauses > 0). NULL means no such row."""
    return con.execute(
        """SELECT e.eval_id, e.run_id, e.dataset, e.mode, r.variant, coalesce(r.w_max, 1) AS w_max,
                  coalesce(c.n_answer, 0) AS n_answer, coalesce(c.n_synthetic, 0) AS n_synthetic,
                  coalesce(c.n_natural, 0) AS n_natural, coalesce(c.n_unclassed, 0) AS n_unclassed,
                  c.answer_pauses, c.other_pauses, c.answer_pause_rate
           FROM evals e LEFT JOIN runs r USING (run_id)
           LEFT JOIN (
               SELECT eval_id,
                      sum(n) FILTER (token_class = 'answer')::BIGINT AS n_answer,
                      sum(n) FILTER (token_class = 'synthetic')::BIGINT AS n_synthetic,
                      sum(n) FILTER (token_class = 'natural')::BIGINT AS n_natural,
                      sum(n) FILTER (token_class IS NULL)::BIGINT AS n_unclassed,
                      sum(sum_expected) FILTER (token_class = 'answer')
                        / sum(n) FILTER (token_class = 'answer') AS answer_pauses,
                      sum(sum_expected) FILTER (token_class IS DISTINCT FROM 'answer')
                        / sum(n) FILTER (token_class IS DISTINCT FROM 'answer') AS other_pauses,
                      sum(n_paused) FILTER (token_class = 'answer')
                        / sum(n) FILTER (token_class = 'answer') AS answer_pause_rate
               FROM class_stats GROUP BY eval_id) c USING (eval_id)
           WHERE e.status = 'complete'
           ORDER BY e.dataset, e.mode, e.run_id"""
    ).df()


def run_checkpoint(con, run_id: str) -> str | None:
    """The checkpoint path stored with the run `run_id` (as it was given then), or None."""
    row = con.execute(
        "SELECT json_extract_string(params, '$.checkpoint') FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    return row[0] if row else None


# config keys that do not make two runs different models: where they were written, how often
# they were logged, and the data (tokens, data_tokens) that the data-efficiency chart varies
_NOT_SETTINGS = {"out", "tokens", "data_tokens", "eval_every", "ckpt_every", "device"}


def hyperparameters(params: str | None) -> dict:
    """The settings of a `runs.params` JSON that the Runs page shows and groups by."""
    p = json.loads(params) if params else {}
    cfg, cyb = p.get("config") or {}, p.get("cyb") or {}
    hp = cfg.get("hparams") or cyb.get("hparams") or {}
    settings = {k: v for k, v in sorted(cfg.items()) if k not in _NOT_SETTINGS}
    return {
        "lr": cfg.get("lr"),
        "batch_size": cfg.get("batch_size"),
        "seq_len": cfg.get("seq_len"),
        "psi": cyb.get("psi", cfg.get("psi")),
        "hparams": " ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "-",
        "budget_tokens": cfg.get("tokens"),
        "data_tokens": cfg.get("data_tokens"),
        "settings": json.dumps(settings, sort_keys=True) if cfg else None,
    }


def data_groups(overview: pd.DataFrame) -> pd.DataFrame:
    """Evaluations of runs that differ only in their training data (same settings, dataset
    and mode), two or more per group; adds `group` (a label) and `regime`."""
    df = overview.dropna(subset=["settings"]).copy()
    if df.empty:
        return df.assign(group=[], regime=[])
    keys = ["settings", "dataset", "mode"]
    df = df[df.groupby(keys)["run_id"].transform("nunique") >= 2].copy()
    if df.empty:
        return df.assign(group=[], regime=[])
    codes = df.groupby(keys, sort=True).ngroup()
    label = df["variant"].astype(str) + " W=" + df["w_max"].astype(str) + " " + df["hparams"]
    df["group"] = label.where(
        codes.groupby(label).transform("nunique") == 1, label + " #" + (codes + 1).astype(str)
    )

    def regime(r) -> str:
        budget, data = r["budget_tokens"], r["data_tokens"]
        if not data or pd.isna(data):
            return "all data"
        return (
            f"{int(data):,} tokens x {budget / data:.3g} epochs"
            if budget
            else f"{int(data):,} tokens"
        )

    df["regime"] = df.apply(regime, axis=1)
    return df.sort_values(["group", "train_tokens"]).reset_index(drop=True)
