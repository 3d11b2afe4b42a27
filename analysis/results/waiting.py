"""Section 10: where waiting pays. Per waiting experiment, the measures per token class, the
gain of waiting, paired verdicts and every run; then any typed-in text evaluation."""

from __future__ import annotations

import pandas as pd

from cyb_core import variants

from . import fmt, waiting_verdicts
from .data import Data
from .waiting_data import CLASSES, dataset, experiments, frame, order, text_evals

FIXED = [v.name for v in variants.VARIANTS.values() if v.readout == "last"]  # d is never trained
INTRO = (
    "Each run of a `waiting-*` experiment (`configs/waiting/`) trains on the mixed corpus "
    "(`data/mixed`: natural text and synthetic lines such as `47 + 385 = 432`) and is evaluated "
    "densely; every predicted token is classed as **answer** (the result of a synthetic line), "
    "**synthetic** (the rest of such a line) or **natural**. The control trains on the same "
    "expanded input as the pause variants but is scored only at the real token's own step, so "
    "control − baseline is what pause positions in context are worth, and cyb-ap − control what "
    "waiting adds. Cells are mean ± sample sd over seeds; E[p] is the expected number of pauses. "
    f"{waiting_verdicts.RULE}\n"
)


def section(d: Data) -> list[str]:
    s = ["## 10. Where waiting pays\n"]
    exps = experiments(d)
    if not exps and not len(text_evals(d)):
        return s + [
            "No waiting experiment collected yet: run `cyb experiment configs/waiting/<grid>.toml`, "
            "then `python -m analysis.results collect --waiting-only` and `render`.\n"
        ]
    s.append(INTRO)
    for exp in exps:
        s += _experiment(d, exp)
    if exps:
        s.append(
            "Held-out nll per class, one dot per seed (the dash: their mean), and validation "
            "perplexity against real tokens (mean over seeds), per experiment:\n"
        )
        s.append("![nll per class](results/fig-waiting.png)\n")
        s.append("![validation curves](results/fig-waiting-curves.png)\n")
    s += _typed_text(d)
    return s


def _experiment(d: Data, exp: str) -> list[str]:
    f = frame(d, exp)
    names = order(f["name"])
    init = ", ".join(f"`{x}`" for x in sorted(f["init"].dropna().unique())) or "–"
    tokens = ", ".join(f"{int(x):,}" for x in sorted(f["tokens"].dropna().unique())) or "–"
    ds = dataset(d, exp)
    n = [f[f"{c}_n"].dropna() for c in CLASSES]  # the same for every run: one evaluation set
    counts = " / ".join(f"{int(x.iloc[0]):,}" if len(x) else "–" for x in n)
    sizes = [float(x.iloc[0]) if len(x) else 0.0 for x in n]
    lines = (
        f"; {sizes[1] / sum(sizes):.0%} are template tokens of the synthetic lines, the words "
        "and operands around an answer, so held-out perplexity mostly measures those"
        if sum(sizes)
        else ""
    )
    s = [
        f"### `{exp}`\n",
        f"Start: {init}; {tokens} real tokens per run; held-out set `{ds or 'not evaluated'}` "
        f"({counts} answer / synthetic / natural tokens{lines}).\n",
        _measures(f, names) + "\n",
    ]
    if len(gain := _gain(f, names)):
        s.append(
            "**Gain of waiting** per class: the mean of log t_(W-1) − log t_0 (how much more "
            "log-probability the target gets at the last step than at the first), and the partial "
            "Spearman correlation of d_0 with the gain of one step given t_0 (among tokens equally "
            "hard at step 0, does the model ask to wait where waiting helps?). "
            f"{' and '.join(FIXED)} answer at the last step whatever d says and never train it, "
            "so they have no correlation; the control is left out (its later steps are never "
            "trained).\n"
        )
        s.append(gain + "\n")
    s.append("**Verdicts**, paired by seed:\n")
    s.append("\n".join(f"- {line}" for line in waiting_verdicts.lines(f)) + "\n")
    s.append(_run_list(f, exp))
    return s


def _mean(g: pd.DataFrame, col: str, spec: str, scale: float = 1.0) -> str | None:
    return fmt.mean_sd(g[col] * scale, spec)


def _measures(f: pd.DataFrame, names: list[str]) -> str:
    rows = []
    for name in names:
        g = f[f["name"] == name]
        done = int(g["ppl"].notna().sum())  # seeds behind the evaluation columns
        rows.append(
            [
                name,
                done if done == len(g) else f"{done} of {len(g)} evaluated",
                _mean(g, "ppl", ".1f"),
                _mean(g, "answer_nll", ".3f"),
                _mean(g, "answer_accuracy", ".1f", 100),
                _mean(g, "synthetic_nll", ".3f"),
                _mean(g, "natural_nll", ".3f"),
            ]
            + [_mean(g, f"{c}_pauses", ".2f") for c in CLASSES]
            + [_mean(g[g["complete"]], "train_min", ".1f")]  # a partial run's time is not a cost
        )
    headers = ["run", "seeds", "held-out ppl", "answer nll", "answer acc %", "synthetic nll",
               "natural nll", "E[p] answer", "E[p] synthetic", "E[p] natural",
               "train min"]  # fmt: skip
    return fmt.table(headers, rows)


def _gain(f: pd.DataFrame, names: list[str]) -> str:
    rows = []
    for name in names:
        g = f[(f["name"] == name) & (f["w"] > 1)]
        readout = variants.get(g["variant"].iloc[0]).readout if len(g) else "first"
        # the control's steps after the first are never trained; skip runs not evaluated yet
        if readout == "first" or not g["answer_gain"].notna().any():
            continue
        partial = [_mean(g, f"{c}_partial0", ".3f") if readout == "own" else None for c in CLASSES]
        gains = [_mean(g, f"{c}_gain", ".3f") for c in CLASSES]
        rows.append([name, int(g["answer_gain"].notna().sum()), *gains, *partial])
    headers = ["run", "seeds"] + [f"log gain {c}" for c in CLASSES]
    headers += [f"partial ρ(d_0) {c}" for c in CLASSES]
    return fmt.table(headers, rows) if rows else ""


def _run_list(f: pd.DataFrame, exp: str) -> str:
    rows = [
        [
            f"`{r.run_id}`",
            r.variant,
            r.w,
            fmt.num(r.psi, "g") if r.w > 1 else None,  # psi' shapes the pause steps only
            fmt.num(r.gamma, "g"),
            "yes" if r.complete else "no",
            fmt.num(r.val_ppl, ".1f"),
            fmt.num(r.ppl, ".1f"),
            fmt.num(r.train_min, ".1f"),
        ]
        for r in f.sort_values(["name", "seed"]).itertuples()
    ]
    headers = ["run id", "variant", "W", "psi'", "gamma", "complete", "val ppl", "held-out ppl",
               "train min"]  # fmt: skip
    return (
        f"<details><summary>Every run of <code>{exp}</code> ({len(rows)})</summary>\n\n"
        + fmt.table(headers, rows)
        + "\n\n</details>\n"
    )


def _typed_text(d: Data) -> list[str]:
    t = text_evals(d)
    if not len(t):
        return []
    s = [
        "### Typed-in text\n",
        "Evaluations of a text file (`cyb eval ... --text FILE`), per class of the predicted "
        "token.\n",
    ]
    for eval_id, g in t.groupby("eval_id", sort=True):
        rows = [
            [
                r.token_class,
                f"{int(r.n):,}",
                fmt.num(r.expected_pauses, ".2f"),
                fmt.num(r.nll, ".3f"),
                fmt.num(100 * r.accuracy, ".1f"),
            ]
            for r in g.itertuples()
        ]
        s.append(f"`{eval_id}`\n")
        s.append(fmt.table(["class", "tokens", "E[pauses]", "nll", "accuracy %"], rows) + "\n")
    return s
