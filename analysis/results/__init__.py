"""docs/results.md and its figures from the paper-comparison runs; `cyb results`
(cyb/commands/results.py) collects the runs into compact Parquet (collect.py) and renders the
document from it (document.py: one function per section in overview.py, perplexity.py,
pauses.py, verdicts.py; figures in figures.py). The experiments after the paper's are one module
each (waiting.py: section 10, frontier.py: section 11) over the generic collection and view of
experiment.py; seeds.py judges paired differences over seeds."""

from .collect import collect
from .data import Data, ResultsError
from .document import render
from .efficiency import crossing
from .figures import build_figures

__all__ = ["Data", "ResultsError", "build_figures", "collect", "crossing", "render"]
