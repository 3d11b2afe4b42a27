"""Section 11: the frontier experiments (configs/frontier/*.toml). Does a model's own placement
of pauses beat the same pauses placed at random, and where does it sit on the frontier of
quality against positions per real token that uniform pauses trace?

    tables(root, dbs)        the frontier-* evaluations -> frontier_evals (per evaluation
                             and token class) and frontier_spearman
    section(d)               the tables and paired verdicts, from those files only

An experiment is the run id's prefix before the first '.'; every one whose name starts with
`frontier-` is collected from every database given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import experiment, fmt, seeds
from .data import Data, ResultsError

NAME = "frontier"
PREFIX = f"{NAME}-"
CLASSES = ("all", "natural", "synthetic", "answer")
SHOWN_CLASSES = ("all", "natural", "answer")  # the verdicts' classes (synthetic is in the table)
CONTROL, BASELINE = "control-w4", "baseline"  # whose per-token gain the pauses are compared with
EVERY_STEP = ("cyb-va", "cyb-dp")  # losses that keep every step's halting mass away from zero

# per evaluation and token class: its rows, mean nll, positions per real token (1 + mean pauses
# in context; dense: W) and, over rows with pauses in context, the mean log t_k - log t_0 at the
# step k read out (what the forced steps did to the target's probability)
_EVALS = """
WITH rows AS (
    SELECT t.eval_id, t.nll, t.pauses, coalesce(t.token_class, 'natural') AS cls,
           CASE WHEN t.pauses > 0 THEN ln(greatest(t.t[t.pauses + 1], 1e-30))
                                      - ln(greatest(t.t[1], 1e-30)) END AS gain
    FROM tokens t JOIN evals e USING (eval_id)
    WHERE e.status = 'complete' AND starts_with(e.run_id, ?)
), classed AS (
    SELECT eval_id, cls, nll, pauses, gain FROM rows
    UNION ALL SELECT eval_id, 'all', nll, pauses, gain FROM rows
)
SELECT e.eval_id, e.run_id, split_part(e.run_id, '.', 1) AS experiment,
       regexp_replace(e.run_id, '^[^.]*[.]|-[0-9]+x[0-9]+-s[0-9]+$', '', 'g') AS arm,
       r.seed, r.variant, r.recipe, coalesce(r.w_max, 1) AS w,
       json_extract_string(r.params, '$.config.hparams') AS hparams,
       json_extract_string(r.params, '$.config.tokens')::BIGINT AS tokens,
       e.dataset, e.mode, c.cls AS token_class, count(*) AS n, avg(c.nll) AS nll,
       coalesce(1 + avg(c.pauses), any_value(coalesce(r.w_max, 1))) AS positions,
       avg(c.gain) AS gain, count(c.gain) AS n_paused
FROM classed c JOIN evals e USING (eval_id) LEFT JOIN runs r USING (run_id)
GROUP BY ALL ORDER BY experiment, e.dataset, arm, e.mode, r.seed, token_class
"""

# per token of an evaluation: what the Spearman verdict pairs across runs of one seed
_TOKENS = """
SELECT t.doc_id, t.idx, t.nll, t.pauses, coalesce(t.token_class, 'natural') AS token_class
FROM tokens t WHERE t.eval_id = ? ORDER BY t.doc_id, t.idx
"""


# ----------------------------------------------------------------------------- collect


def tables(root: Path | None, dbs: Sequence[Path]) -> dict[str, pd.DataFrame]:
    """frontier_evals and frontier_spearman from every frontier evaluation in `dbs` (databases
    that do not exist are skipped; `root` is unused: every number comes from the databases)."""
    from analysis import store

    evals, rhos = [], []
    for db in dbs:
        if not Path(db).is_file():
            continue
        with store.reading(db) as con:
            ev = con.execute(_EVALS, [PREFIX]).df()
            evals.append(ev)
            rhos.append(_spearman(con, ev))
    if not evals or all(e.empty for e in evals):
        raise ResultsError(
            f"no frontier evaluation in {', '.join(map(str, dbs)) or 'no database'}: run "
            "`make frontier` first"
        )
    return {
        "frontier_evals": pd.concat(evals, ignore_index=True),
        "frontier_spearman": pd.concat(rhos, ignore_index=True),
    }


def figures(d: Data) -> dict:
    """None: the section is tables and verdicts (the app draws the frontier chart)."""
    return {}


def _spearman(con, ev: pd.DataFrame) -> pd.DataFrame:
    """Per adaptive evaluation: Spearman's rho between a token's pause count and the nll gain of
    the same seed's W = 4 control over its baseline on that token (all rows and per class)."""
    ev = ev[ev["token_class"] == "all"]
    dense = ev[ev["mode"] == "dense"].set_index(["experiment", "dataset", "arm", "seed"])
    rows = []
    for r in ev[ev["mode"] == "adaptive"].itertuples():
        keys = [(r.experiment, r.dataset, a, r.seed) for a in (BASELINE, CONTROL)]
        if not all(k in dense.index for k in keys):
            continue
        base, ctrl = (con.execute(_TOKENS, [dense.loc[k, "eval_id"]]).df() for k in keys)
        ada = con.execute(_TOKENS, [r.eval_id]).df()
        gain = base[["doc_id", "idx", "nll"]].merge(
            ctrl[["doc_id", "idx", "nll"]], on=["doc_id", "idx"], suffixes=("_b", "_c")
        )
        gain["gain"] = gain["nll_b"] - gain["nll_c"]  # > 0: the positions helped this token
        both = ada[["doc_id", "idx", "pauses", "token_class"]].merge(gain, on=["doc_id", "idx"])
        for cls in CLASSES:
            sel = both if cls == "all" else both[both["token_class"] == cls]
            rho = (
                sel["pauses"].rank().corr(sel["gain"].rank())
                if len(sel) > 2 and sel["pauses"].nunique() > 1
                else math.nan
            )
            rows.append({"experiment": r.experiment, "dataset": r.dataset, "arm": r.arm,
                         "seed": r.seed, "token_class": cls, "rho": rho, "n": len(sel)})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["experiment", "dataset", "arm", "seed", "token_class", "rho", "n"]
    )


# ----------------------------------------------------------------------------- section

INTRO = (
    "Extra positions can pay without any waiting (section 10's control). The question here is "
    "the other half of the CYB claim: does a model's **own choice of where to spend its "
    "pauses** (Recipe 2: a pause only while it says `<dont_know>`, mode **adaptive**) buy more "
    "than **the same pause counts permuted across the real tokens of each document** "
    "(**shuffled**: the same multiset, so exactly the same positions), and where does it sit "
    "against **K pauses after every token, read out at step K** (**uniformK**, the model's own "
    "frontier of quality against positions per real token)? Each arm of a `frontier-*` "
    "experiment (`configs/frontier/`, `make frontier`) is trained from scratch on the same "
    "budget of real tokens; the Recipe-2 arms (cyb-ap, cyb-va, cyb-dp) stop during training "
    "after k ~ omega = 1:1:1:1 pauses, so every step is in context for some tokens. **Positions** "
    "is 1 + the mean pauses in context per real token (dense: W). **log t_k − log t_0** is, over "
    "the tokens with k > 0 pauses in context, the mean gain of the target's log-probability "
    "from step 0 to the step read out: negative means the forced steps hurt, the confound named "
    "below. Cells are mean ± sample sd over seeds.\n"
)
RULE = (
    "Verdicts pair runs by seed (same initialisation and "
    "data order): **shown** when at least 3 seeds agree in sign and the mean difference exceeds "
    "2 sd of the differences (with 3 seeds that is t > 3.46, p ≈ 0.07 two-sided: a screen, not "
    "a significance test), **suggestive** when they agree with fewer seeds or a smaller margin, "
    "**not shown** when they disagree; a single seed is anecdotal."
)
RULES = (
    "The three comparisons, per Recipe-2 arm and token class: (1) **placement**: nll(adaptive) "
    "− nll(shuffled) of the same model, equal positions by construction; (2) **frontier**: "
    "nll(adaptive) − the model's uniform curve (uniform0..3, linear in positions) at the "
    "adaptive positions; (3) **where it pauses vs where positions pay**: Spearman's rho between "
    "a token's adaptive pause count and the per-token nll gain of the same seed's W = 4 control "
    "over its baseline on that token (positive: it pauses where positions help). Negative "
    "differences favour the model's own placement. A model whose later steps are worse than "
    "step 0 (log t_k − log t_0 < 0) loses under any forced waiting, so adaptive beating "
    "shuffled then says only that it avoids its own bad steps: the verdicts are stated "
    f"separately for losses that keep every step trained ({', '.join(EVERY_STEP)}: their "
    "halting mass cannot collapse onto step 0) and for the others."
)


def section(d: Data) -> list[str]:
    s = ["## 11. Does learned placement beat random placement? The compute frontier\n"]
    ev = getattr(d, "frontier_evals", None)
    if ev is None or not len(ev):
        return s + [
            "No frontier experiment collected yet: run `make frontier` (or `cyb experiment "
            "configs/frontier/<grid>.toml`), then `cyb results collect --frontier-only` "
            "and `render`.\n"
        ]
    rho = getattr(d, "frontier_spearman", pd.DataFrame(columns=["experiment"]))
    s += [INTRO, RULE + "\n", RULES + "\n"]
    for (exp, dataset), g in ev.groupby(["experiment", "dataset"], sort=True):
        r = rho[(rho["experiment"] == exp) & (rho["dataset"] == dataset)]
        s += _experiment(exp, dataset, g, r)
    return s


def _cell(g: pd.DataFrame, col: str, spec: str) -> str | None:
    return fmt.mean_sd(g[col].astype(float), spec)


def _experiment(exp: str, dataset: str, g: pd.DataFrame, rho: pd.DataFrame) -> list[str]:
    alln = g[g["token_class"] == "all"]
    n_cls = alln.iloc[0] if len(alln) else None
    counts = g[(g["eval_id"] == n_cls["eval_id"])] if n_cls is not None else g.iloc[:0]
    sizes = ", ".join(
        f"{int(c['n']):,} {c['token_class']}"
        for _, c in counts.iterrows()
        if c["token_class"] != "all"
    )
    tokens = int(alln["tokens"].dropna().iloc[0]) if alln["tokens"].notna().any() else None
    s = [
        f"### `{exp}` on `{dataset}`\n",
        f"{tokens:,} real training tokens per run; held-out tokens per class: {sizes}.\n"
        if tokens
        else f"Held-out tokens per class: {sizes}.\n",
    ]
    wide = g.pivot_table(
        index=["arm", "mode", "seed"], columns="token_class", values=["nll", "positions", "gain"]
    )
    rows = []
    for (arm, mode), m in wide.groupby(level=["arm", "mode"], sort=False):
        m = m.droplevel([0, 1])
        cells = [arm, mode, len(m), _cell(m, ("positions", "all"), ".3f")]
        cells += [_cell(m, ("nll", c), ".4f") if ("nll", c) in m else None for c in CLASSES]
        cells.append(_cell(m, ("gain", "all"), ".3f") if ("gain", "all") in m else None)
        rows.append(cells)
    rows.sort(key=lambda r: (experiment.rank(r[0]), _mode_order(r[1])))
    heads = ["arm", "mode", "seeds", "positions", *(f"nll {c}" for c in CLASSES)]
    s.append(fmt.table([*heads, "log t_k − log t_0"], rows) + "\n")
    s += _verdicts(g, rho)
    return s


def _mode_order(mode: str) -> tuple:
    kinds = ("dense", "adaptive", "shuffled")
    return (kinds.index(mode), 0) if mode in kinds else (3, mode)


def _by_seed(g: pd.DataFrame, arm: str, mode: str, cls: str, col: str = "nll") -> dict:
    sel = g[(g["arm"] == arm) & (g["mode"] == mode) & (g["token_class"] == cls)]
    return {int(k): float(v) for k, v in zip(sel["seed"], sel[col], strict=True)}


def _on_frontier(g: pd.DataFrame, arm: str, cls: str) -> dict:
    """Per seed: the nll of the arm's uniform curve (uniform0..3) at its adaptive positions."""
    ada = _by_seed(g, arm, "adaptive", "all", "positions")
    out = {}
    for seed, x in ada.items():
        u = g[(g["arm"] == arm) & (g["seed"] == seed) & (g["token_class"] == cls)]
        u = u[u["mode"].str.fullmatch(r"uniform\d+")].sort_values("positions")
        if len(u) >= 2 and u["positions"].min() <= x <= u["positions"].max():
            out[seed] = float(np.interp(x, u["positions"], u["nll"]))
    return out


def _say(diffs: list[float], spec: str = ".4f") -> str:
    v = seeds.verdict(diffs)
    if v in (seeds.SHOWN, seeds.SUGGESTIVE):
        v += f" ({'own placement better' if np.mean(diffs) < 0 else 'own placement worse'})"
    return f"{seeds.describe(diffs, spec)}: **{v}**" if v else "no paired seeds"


def _verdicts(g: pd.DataFrame, rho: pd.DataFrame) -> list[str]:
    arms = sorted(set(g.loc[g["mode"] == "adaptive", "arm"]), key=experiment.rank)
    if not arms:
        return ["No Recipe-2 arm evaluated in adaptive mode here: no placement verdict.\n"]
    out = []
    for group, members in (
        ("every step trained", [a for a in arms if a.startswith(EVERY_STEP)]),
        ("step 0 may take all the halting mass", [a for a in arms if not a.startswith(EVERY_STEP)]),
    ):
        if not members:
            continue
        out.append(f"**Verdicts, {group}** ({', '.join(members)}):\n")
        present = set(g.loc[(g["token_class"] != "all") & (g["n"] > 0), "token_class"])
        shown = (
            ["all", *(c for c in SHOWN_CLASSES[1:] if c in present)]
            if len(present) > 1
            else ["all"]
        )
        for arm in members:
            parts = []
            for cls in shown:
                place = seeds.paired(
                    _by_seed(g, arm, "adaptive", cls), _by_seed(g, arm, "shuffled", cls)
                )
                front = seeds.paired(_by_seed(g, arm, "adaptive", cls), _on_frontier(g, arm, cls))
                if place:
                    parts.append(f"{cls}: placement {_say(place)}")
                if front:
                    parts.append(f"{cls}: frontier {_say(front)}")
            r = rho[(rho["arm"] == arm) & (rho["token_class"] == "all")]["rho"].dropna()
            if len(r):
                above = int((r > 0).sum())
                v = seeds.verdict(list(r))
                parts.append(
                    f"pauses vs the control's gain: rho {fmt.mean_sd(r, '.3f')} ({above} of "
                    f"{len(r)} seeds positive: **{v}**)"
                )
            gain = g[(g["arm"] == arm) & (g["token_class"] == "all") & (g["mode"] == "adaptive")]
            gain = gain["gain"].dropna()
            g_txt = (
                f"; log t_k − log t_0 at its own pauses {fmt.mean_sd(gain, '.3f')}"
                if len(gain)
                else ""
            )
            out.append(f"- **{arm}**{g_txt}: " + ("; ".join(parts) or "no paired seeds") + ".")
        out.append("")
    return out
