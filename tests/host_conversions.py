"""Count tensor-to-host conversions: the CPU-side proxy for CPU-GPU syncs.

On a GPU, Python code waits for the device whenever it needs a tensor's value on the host:
`if t:` (Tensor.__bool__), int(t), float(t), t.item(), t.tolist(), t.cpu(), t.numpy(), and
any op whose output size depends on values (t.nonzero(), t[bool_mask], t[bool_mask] = v,
masked_select, unique, repeat_interleave by a tensor). On a CPU the same calls happen but
cost nothing, so counting them on a CPU says how many syncs the same code makes on a GPU
(up to conversions of tensors that would live on the host there too, which this counts as
well: the count is an upper bound). Calls made inside C++ (a library's own kernels) are not
seen; transformers' mask builder and our loops are Python.

    with HostConversions() as hc:
        ...
    hc.total, hc.by_kind  # e.g. 9, {'__bool__': 8, 'tolist': 1}
"""

from __future__ import annotations

import traceback
from collections import Counter

import torch

_METHODS = (
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "item",
    "tolist",
    "cpu",
    "numpy",
    "nonzero",
    "masked_select",
    "unique",
)
_FUNCTIONS = ("nonzero", "masked_select", "unique")


def _tensor_repeats(x, repeats=None, *args, output_size=None, **kwargs) -> bool:
    return isinstance(repeats, torch.Tensor) and repeats.numel() > 1 and output_size is None


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostConversions:
    """Context manager patching torch.Tensor (and a few torch functions) to count conversions.

    `where`: keep the innermost frame of our own code (cyb_core, transformers) of each call,
    to say where the conversions come from when a bound fails.
    """

    def __init__(self):
        self.by_kind: Counter = Counter()
        self.where: Counter = Counter()
        self._saved: list = []

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def _count(self, kind: str) -> None:
        self.by_kind[kind] += 1
        for frame in reversed(traceback.extract_stack(limit=12)[:-2]):
            if "cyb_core" in frame.filename or "transformers" in frame.filename:
                self.where[f"{kind} {frame.filename.split('/')[-1]}:{frame.lineno}"] += 1
                break

    def _wrap(self, owner, name: str, kind: str, when=None) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))

        def counted(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                self._count(kind)
            return original(*args, **kwargs)

        setattr(owner, name, counted)

    def __enter__(self) -> HostConversions:
        for name in _METHODS:
            self._wrap(torch.Tensor, name, name)
        for name in _FUNCTIONS:
            self._wrap(torch, name, name)
        for owner in (torch, torch.Tensor):  # repeats given as a tensor: their sum on the host
            self._wrap(owner, "repeat_interleave", "repeat_interleave", when=_tensor_repeats)
        self._wrap(
            torch.Tensor,
            "__getitem__",
            "bool-index",
            when=lambda self_, index: _has_bool_index(index),
        )
        self._wrap(
            torch.Tensor,
            "__setitem__",
            "bool-index",
            when=lambda self_, index, value: _has_bool_index(index),
        )
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def report(self) -> str:
        top = ", ".join(f"{k} x{n}" for k, n in self.where.most_common(8))
        return f"{self.total} conversions {dict(self.by_kind)}; from {top}"
