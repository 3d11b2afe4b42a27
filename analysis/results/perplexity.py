"""Sections 1-5: held-out perplexity across learning rates, losses, loss hyperparameters, pause
initialisations, data budgets and training from scratch."""

from __future__ import annotations

import json

import pandas as pd

from . import efficiency, fmt
from .data import BASE_RUN, CURVE, REGIMES, VARIANTS, Data, hparam_rows, lr_sweep
from .paper import PAPER_MULTIPLE, PAPER_PPL


def _baseline_mean(d: Data) -> float:
    """The reference of every Δ column: the fine-tuned baseline's mean over seeds."""
    return d.pick("paper-variants", "baseline")["ppl"].mean()


def learning_rates(d: Data) -> list[str]:
    lr = lr_sweep(d)
    if not len(lr):
        return []
    # each family's rate: the lowest validation perplexity among its complete runs
    done = lr[lr["complete"]]
    choice = {fam: float(g.loc[g["val_ppl"].idxmin(), "lr"]) for fam, g in done.groupby("family")}
    fams = [f for f in ("baseline", "tbys-3", "cyb-ap") if f in set(lr["family"])]
    rows = []
    for rate in sorted(lr["lr"].unique()):
        row = [f"{rate:.0e}"]
        for fam in fams:
            g = lr[(lr["family"] == fam) & (lr["lr"] == rate)]
            v = fmt.num(g["val_ppl"].iloc[0], ".2f") if len(g) else None
            row.append(f"**{v}**" if v and choice.get(fam) == rate else v)
        rows.append(row)
    s = [
        "## 1. Learning rates (validation slice)\n",
        "Validation perplexity at the end of each 1x1 run; bold is the rate used everywhere below "
        "(tbys-1/2 take tbys-3's; cyb-va, cyb-dp and the hyperparameter runs take cyb-ap's; the "
        "from-scratch runs use 2e-3).\n",
        fmt.table(["peak lr"] + fams, rows) + "\n",
    ]
    used = {f: d.one("paper-variants", f)["lr"] for f in fams if d.one("paper-variants", f)}
    if any(abs(used[f] - choice[f]) > 1e-12 for f in used):
        s.append(f"**Warning:** the configs use {used}, the sweep chose {choice}.\n")
    s.append("![learning-rate sweep](results/fig-lr.png)\n")
    return s


def variants(d: Data) -> list[str]:
    base_mean = _baseline_mean(d)
    paper_base = PAPER_PPL["base"]
    rows = [
        [
            "base model (no fine-tuning)",
            1,
            fmt.num(d.base_ppl),
            None,
            fmt.change(d.base_ppl, base_mean),
            paper_base,
            fmt.change(paper_base, PAPER_PPL["baseline"]),
            f"`{BASE_RUN}`",
        ]
    ]
    for v in VARIANTS:
        sel = d.pick("paper-variants", v)
        if not len(sel):
            continue
        pauses = fmt.mean_sd(sel["mean_expected_pauses"], ".2f") if v.startswith("cyb") else None
        rows.append(
            [
                v,
                len(sel),
                fmt.mean_sd(sel["ppl"]),
                pauses,
                fmt.change(sel["ppl"].mean(), base_mean),
                f"{PAPER_PPL[v]:.2f}",
                fmt.change(PAPER_PPL[v], PAPER_PPL["baseline"]),
                ", ".join(f"`{r}`" for r in sel["run_id"]),
            ]
        )
    headers = ["variant", "seeds", "perplexity", "E[pauses]", "Δ vs baseline", "paper",
               "paper Δ", "runs"]  # fmt: skip
    return [
        "## 2. Loss variants (paper Fig. 4)\n",
        "Held-out perplexity, mean ± sample standard deviation over seeds; Δ is against the "
        "fine-tuned baseline's mean, as is the paper's.\n",
        fmt.table(headers, rows) + "\n",
        "![variants](results/fig-variants.png)\n",
    ]


def hyperparameters(d: Data) -> list[str]:
    base_mean = _baseline_mean(d)
    rows = [
        [
            r["label"],
            fmt.num(r["ppl"]),
            fmt.num(r["pauses"], ".2f"),
            fmt.change(r["ppl"], base_mean),
            r["paper"],
            f"`{r['run']}`",
        ]
        for r in hparam_rows(d)
    ]
    headers = ["setting", "perplexity", "E[pauses]", "Δ vs baseline", "paper", "run"]
    return [
        "## 3. Loss hyperparameters (paper Fig. 5)\n",
        "Seed 0. The paper's column is C4 perplexity (its baseline: 12.17).\n",
        fmt.table(headers, rows) + "\n",
        "![hyperparameters](results/fig-hparams.png)\n",
    ]


def pause_init(d: Data) -> list[str]:
    if not len(d.main[d.main["experiment"] == "paper-pause-init"]):
        return []
    base_mean = _baseline_mean(d)
    rows = []
    for name in ("tbys-3", "cyb-ap"):
        starts = (
            ("as pretrained", d.one("paper-variants", name)),
            ("mean real-token embedding", d.one("paper-pause-init", name)),
        )
        for label, r in starts:
            if r is not None:
                pauses = (
                    fmt.num(r["mean_expected_pauses"], ".2f") if name.startswith("cyb") else None
                )
                rows.append(
                    [
                        name,
                        label,
                        fmt.num(r["val_ppl"]),
                        fmt.num(r["ppl"]),
                        pauses,
                        fmt.change(r["ppl"], base_mean),
                        f"`{r['run_id']}`",
                    ]
                )
    headers = ["variant", "pause rows start at", "val ppl", "held-out ppl", "E[pauses]",
               "Δ vs baseline", "run"]  # fmt: skip
    return [
        "## 3b. Where the pause embeddings start\n",
        "Seed 0, same learning rates. The pretrained pause rows were never input; they sit at "
        "about 3x the norm of a real token's row.\n",
        fmt.table(headers, rows) + "\n",
    ]


def data_efficiency(d: Data) -> list[str]:
    rows = []
    for v in CURVE:
        pts = efficiency.curve(d, v)
        rows.append([v] + [fmt.num(pts.get(k)) for k in REGIMES])
    ap = efficiency.curve(d, "cyb-ap").get("1x1", float("nan"))
    base1 = efficiency.curve(d, "baseline").get("1x1", float("nan"))
    targets = [
        (v, f"{v}, to reach cyb-ap's 1x1", ap, PAPER_MULTIPLE[v]) for v in ("baseline", "tbys-3")
    ] + [("cyb-ap", "cyb-ap, to reach the baseline's 1x1", base1, "about 1/3x")]
    mult = [
        [label, efficiency.multiple(d, v, t), efficiency.extrapolated(d, v, t), paper]
        for v, label, t, paper in targets
    ]
    headers = ["variant", "data multiple (ours)", "log-linear extrapolation", "paper"]
    return [
        "## 4. Data efficiency (paper Fig. 6)\n",
        "Held-out perplexity, seed 0. 1x1: the budget; 2x1: two epochs of the same data; "
        "1x2 / 1x3: two / three times as much data, one epoch.\n",
        fmt.table(["variant"] + list(REGIMES), rows) + "\n",
        "**Data multiple:** how much data each needs to reach the other's 1x1 perplexity, "
        "interpolated linearly between 1x1, 1x2 and 1x3; where the target is not reached within "
        "3x, a line fitted to perplexity against log(data) over those three points says where it "
        "would be (outside the measured range: a guess, not a measurement).\n",
        fmt.table(headers, mult) + "\n",
        "![data efficiency](results/fig-data.png)\n",
    ]


def scratch(d: Data) -> list[str]:
    sc = d.main[d.main["experiment"] == "paper-scratch"]
    if not len(sc):
        return []
    rows = []
    for r in sc.sort_values("name").itertuples():
        # a run without an evaluation has a NaN eval_id
        if isinstance(r.eval_id, str):
            sdist = d.steps[d.steps["eval_id"] == r.eval_id].sort_values("pauses")["mean_s"]
        else:
            sdist = pd.Series(dtype=float)
        if r.variant == "baseline":
            settings = "no pauses"
        else:
            hp = ", ".join(f"{k} {v}" for k, v in json.loads(r.hparams).items())
            settings = f"psi' {r.psi:g}, " + hp
        rows.append(
            [
                f"{r.name} s{r.seed}",
                settings,
                f"{r.tokens:,}",
                fmt.num(r.val_ppl),
                fmt.num(r.ppl),
                fmt.num(r.mean_expected_pauses, ".2f"),
                " / ".join(f"{x:.2f}" for x in sdist) or None,
                f"`{r.run_id}`",
            ]
        )
    headers = ["run", "settings", "tokens", "val ppl", "held-out ppl", "E[pauses]", "mean s",
               "run id"]  # fmt: skip
    s = [
        "## 5. From scratch (regime b)\n",
        "Same model shape, trained from random weights on the pretraining split, lr 2e-3, equal "
        "real-token budgets; mean s is the share of answers after 0 / 1 / 2 / 3 pauses.\n",
        fmt.table(headers, rows) + "\n",
    ]
    base = sc[sc["variant"] == "baseline"].set_index("seed")["ppl"]
    for name, g in sc[sc["variant"] != "baseline"].groupby("name"):
        diffs = [
            (seed, p - base[seed])
            for seed, p in zip(g["seed"], g["ppl"], strict=True)
            if seed in base
        ]
        if len(diffs) > 1:
            paired = ", ".join(
                f"{x:+.1f} ({100 * x / base[seed]:+.1f}%) for seed {seed}" for seed, x in diffs
            )
            s.append(
                f"Paired by seed (same initialisation and data order), {name} minus baseline: "
                f"{paired}; the baseline's own seeds differ by {base.max() - base.min():.1f}.\n"
            )
    return s
