"""The one registry of loss variants: what each trains, how it is read out, its W rule, its knobs.

Torch-free, so the command line can build its choices and flags without importing torch.
Adding a variant is one entry here plus its loss function in cyb_core/losses.py (named by
`loss`) and a test; the CLI, the trainer, the evaluators, the runner, the store and the app
(colour) all read this table.

Read-outs (how a trained model answers; method.md section 5):
  own    the model's own stopping: answer at step i with s_i (omega one-hot last, gamma 1)
  last   always at the last step, whatever d says (TBYS)
  first  always at step 0, the real token's own position (the control: pauses in context only)
"""

from __future__ import annotations

from dataclasses import dataclass

READOUTS = ("own", "last", "first")


@dataclass(frozen=True)
class Variant:
    name: str
    loss: str  # function name in cyb_core.losses: (StepQuantities, **hparams) -> (B, T) loss
    readout: str  # one of READOUTS
    color: str  # the one colour of this variant in every chart
    help: str
    hparams: tuple[str, ...] = ()
    fixed_w: int | None = None  # W this variant always uses (the baseline: 1, no pauses)
    min_w: int = 1


HPARAMS = {  # name -> (type, help); the CLI turns each into --name
    "omega": (str, "world stop distribution, e.g. 0:0:0:1 (cyb-ap; Recipe 2 pause counts)"),
    "gamma": (float, "discount gamma_0 in [0, 1] (cyb-ap)"),
    "gamma_kind": (str, "exp or linear discount (cyb-ap)"),
    "rho": (str, "target halting distribution, e.g. 1:1:1:1 (cyb-va, cyb-dp)"),
    "alpha": (float, "weight of the distributional penalty (cyb-dp)"),
}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "baseline",
            "baseline_loss",
            "own",
            "#7f7f7f",
            "cross-entropy, no pauses (W = 1)",
            fixed_w=1,
        ),
        Variant(
            "control",
            "first_step_loss",
            "first",
            "#8c564b",
            "pauses in context, cross-entropy at the real token's own step: the value of "
            "extra positions without waiting",
            min_w=2,
        ),
        Variant(
            "every-step",
            "every_step_loss",
            "last",
            "#17becf",
            "cross-entropy averaged over every step: a pause-familiar base whose pause steps "
            "all learn to predict",
            min_w=2,
        ),
        Variant(
            "tbys",
            "last_step_loss",
            "last",
            "#1f77b4",
            "cross-entropy at the last pause (W - 1 pauses)",
            min_w=2,
        ),
        Variant(
            "cyb-ap",
            "cyb_ap_loss",
            "own",
            "#d62728",
            "CYB-AP: expected likelihood under the model's stopping",
            ("omega", "gamma", "gamma_kind"),
        ),
        Variant(
            "cyb-va",
            "cyb_va_loss",
            "own",
            "#2ca02c",
            "CYB-VA: variational bound with a halting prior",
            ("rho",),
        ),
        Variant(
            "cyb-dp",
            "cyb_dp_loss",
            "own",
            "#9467bd",
            "CYB-DP: likelihood plus a penalty towards rho",
            ("rho", "alpha"),
        ),
    )
}

# the pair whose per-token difference is what pause positions alone are worth (the Text page's
# gain colouring): no pauses at all, and pauses in context scored at the real token's own step
NO_PAUSES = next(v.name for v in VARIANTS.values() if v.fixed_w == 1)
POSITIONS_ONLY = next(v.name for v in VARIANTS.values() if v.readout == "first")


def get(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown loss variant {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def resolve_w(name: str, w: int) -> int:
    """The W a run of `name` uses when asked for `w`: the variant's fixed W if it has one."""
    v = get(name)
    return v.fixed_w if v.fixed_w is not None else w


def color(name: str, default: str = "#444444") -> str:
    """Colour of a variant or of a run name that starts with one ('tbys-3', 'cyb-ap-time')."""
    for key in sorted(VARIANTS, key=len, reverse=True):
        if name == key or name.startswith(key + "-"):
            return VARIANTS[key].color
    return default
