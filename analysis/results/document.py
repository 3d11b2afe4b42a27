"""`render`: the compact results data -> docs/results.md and its figures, section by section."""

from __future__ import annotations

from pathlib import Path

from cyb_core.atomic import atomic_write

from . import frontier, overview, pauses, perplexity, verdicts, waiting
from .data import DATA_DIR, DATASET, DOC, Data
from .figures import build_figures

# the experiment sections after the paper's, in order: each module names its family (NAME), has
# `tables(root, dbs)` for `collect`, `section(d)` and `figures(d)`
EXPERIMENTS = (waiting, frontier)


def render(
    data: Path = DATA_DIR, doc: Path = DOC, figures: bool = True, dataset: str = DATASET
) -> Path:
    d = Data(data, dataset)
    fig_dir = doc.parent / "results"
    build_figures(d, fig_dir if figures else None, EXPERIMENTS)
    notes = fig_dir / "notes.md"  # the hand-written reading of the numbers
    sections = (
        overview.header(notes.read_text() if notes.exists() else ""),
        overview.setup(d),
        perplexity.learning_rates(d),
        perplexity.variants(d),
        perplexity.hyperparameters(d),
        perplexity.pause_init(d),
        perplexity.data_efficiency(d),
        perplexity.scratch(d),
        pauses.latency(d),
        pauses.calibration(d),
        pauses.tokens(d),
        verdicts.what_reproduced(d),
        *(experiment.section(d) for experiment in EXPERIMENTS),
        overview.runs(d),
    )
    text = "\n".join(part for section in sections for part in section)
    return atomic_write(doc, lambda p: p.write_text(text))
