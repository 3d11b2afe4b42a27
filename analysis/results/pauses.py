"""Sections 6-8: how long the CYB models wait, whether waiting is well placed, and on which
tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import fmt
from .data import MAIN, Data
from .paper import PAPER_LATENCY, PAPER_SPEARMAN, PAPER_TOKENS


def latency(d: Data) -> list[str]:
    rows = []
    for name in ("cyb-ap", "cyb-va", "cyb-dp"):
        for r in d.pick("paper-variants", name).itertuples():
            sd = d.steps[d.steps["eval_id"] == r.eval_id].sort_values("pauses")["mean_s"].tolist()
            if sd:
                rows.append(
                    [f"{name} s{r.seed}"]
                    + [f"{100 * x:.0f}%" for x in sd]
                    + [fmt.num(r.mean_expected_pauses, ".2f")]
                )
    paper_pauses = sum(i * x for i, x in enumerate(PAPER_LATENCY))
    rows.append(
        ["paper cyb-ap (best)"]
        + [f"{100 * x:.0f}%" for x in PAPER_LATENCY]
        + [fmt.num(paper_pauses, ".2f")]
    )
    return [
        "## 6. Latency (paper Figs. 7-9)\n",
        "Token-averaged halting distribution: share of answers after 0, 1, 2, 3 pauses.\n",
        fmt.table(["run", "0", "1", "2", "3", "E[pauses]"], rows) + "\n",
        "![latency](results/fig-latency.png)\n",
    ]


def calibration(d: Data) -> list[str]:
    cal = d.calibration.merge(d.main[["eval_id", "experiment", "name", "seed"]], on="eval_id")
    rows = []
    for (exp, name), g in cal.groupby(["experiment", "name"]):
        if exp not in ("paper-variants", "paper-hparams") or not name.startswith("cyb"):
            continue
        per = [fmt.mean_sd(g[g["step"] == i]["spearman"], ".3f") for i in range(3)]
        rows.append([f"{exp}.{name}", g["seed"].nunique()] + per)
    rows.append(["paper cyb-ap", None] + [f"{x:.3f}" for x in PAPER_SPEARMAN])
    s = [
        "## 7. Calibration (paper Fig. 10)\n",
        "Spearman correlation of d_i (the don't-know probability at step i) with the gain "
        "t_{i+1} - t_i it predicts, per step; mean ± sd over seeds where there are several.\n",
        fmt.table(["run", "seeds", "step 0", "step 1", "step 2"], rows) + "\n",
    ]
    main_eval = (d.one("paper-variants", "cyb-ap") or {}).get("eval_id")
    gains = cal[cal["eval_id"] == main_eval].sort_values("step")
    if len(gains):
        s.append(
            f"What waiting buys in `{MAIN}`: the mean of d_i and of the gain t_(i+1) - t_i (the "
            "change in the probability of the correct next token from one more step), over all "
            "tokens.\n"
        )
        rows = [[int(r.step), f"{r.mean_d:.3f}", f"{r.mean_gain:+.4f}"] for r in gains.itertuples()]
        s.append(fmt.table(["step i", "mean d_i", "mean gain t_(i+1) - t_i"], rows) + "\n")
    s.append("![calibration](results/fig-calibration.png)\n")
    return s


def tokens(d: Data) -> list[str]:
    s = ["## 8. Which tokens get pauses (paper Table 3)\n"]
    if len(d.table3):
        s += _quadrants(d.table3)
    if len(d.token_stats):
        s.append(_paper_tokens(d))
    if len(d.tags):
        s += _tags(d.tags)
    return s


def _quadrants(t3: pd.DataFrame) -> list[str]:
    rows = []
    for (ml, vl), g in t3.groupby(["median_level", "variance_level"], sort=False):
        cells = " ".join(
            f"`{fmt.token(t)}` {m:.2f}" for t, m in zip(g["token"], g["mean"], strict=True)
        )
        rows.append([f"{ml} median, {vl} variance", cells])
    return [
        f"Input-token types with at least 20 occurrences in `{MAIN}`'s evaluation, split at the "
        f"median of per-type median expected pauses ({t3['median_threshold'].iloc[0]:.3f}) and "
        f"variance ({t3['variance_threshold'].iloc[0]:.4f}); the types deepest in each corner, "
        "with mean pauses.\n",
        fmt.table(["quadrant", "tokens (mean expected pauses)"], rows) + "\n",
    ]


def _paper_tokens(d: Data) -> str:
    """The paper's Table-3 example tokens in the main cyb-ap evaluation, and how stable the
    per-type ranking is across cyb-ap seeds."""
    ts = d.token_stats[d.token_stats["eval_id"].isin(d.pick("paper-variants", "cyb-ap")["eval_id"])]
    main = ts[ts["eval_id"] == d.one("paper-variants", "cyb-ap")["eval_id"]]
    common = main[main["n"] >= 20]
    rows = []
    for group, words in PAPER_TOKENS.items():
        cells = []
        for w in words.split():
            hit = main[main["token"].str.strip() == w]
            n = int(hit["n"].sum())
            if n == 0:
                cells.append(f"{w} (absent)")
                continue
            mean = float((hit["mean"] * hit["n"]).sum() / n)
            pct = (common["mean"] < mean).mean() * 100
            cells.append(f"{w} {mean:.2f} (n {n}, p{pct:.0f})")
        rows.append([group, "; ".join(cells)])
    out = (
        "The paper's example tokens in the same evaluation (as whole BPE tokens, with or without a "
        "leading space): mean expected pauses, count, and percentile among types with at least 20 "
        "occurrences.\n\n"
    )
    out += fmt.table(["paper's group", "ours"], rows) + "\n"
    seeds = ts.pivot_table(index="token_id", columns="eval_id", values="mean")
    counts = ts.pivot_table(index="token_id", columns="eval_id", values="n")
    seeds = seeds[(counts >= 20).all(axis=1)]
    if seeds.shape[1] >= 2:
        r = seeds.rank().corr().to_numpy()[np.triu_indices(seeds.shape[1], 1)]
        stable = "stable" if r.min() > 0.7 else "only partly stable"
        out += (
            f"\nAcross the {seeds.shape[1]} cyb-ap seeds, the per-type mean pauses of the "
            f"{len(seeds)} types with at least 20 occurrences agree with a Spearman correlation of "
            f"{r.mean():.3f} (range {r.min():.3f}–{r.max():.3f}), so the ranking of token types is "
            f"{stable} across seeds.\n"
        )
    return out


def _tags(tags: pd.DataFrame) -> list[str]:
    g = tags.sort_values("mean")
    pick = pd.concat([g.head(6), g[g["tag"].isin(["NN", "NNS"])], g.tail(6)]).drop_duplicates("tag")
    quotes = {"``": "`` (opening quote)", "''": "'' (closing quote)"}
    rows = [
        [quotes.get(r.tag, r.tag), f"{r.n:,}", f"{r.mean:.3f}", f"{r.ci_low:.3f}–{r.ci_high:.3f}"]
        for r in pick.sort_values("mean").itertuples()
    ]
    return [
        "Mean expected pauses by Penn tag (spaCy) of the input token, with 95% bootstrap "
        "intervals: the six lowest and highest of the tags with at least 200 tokens, plus NN and "
        f"NNS, `{MAIN}`:\n",
        fmt.table(["tag", "tokens", "mean", "95% CI"], rows) + "\n",
    ]
