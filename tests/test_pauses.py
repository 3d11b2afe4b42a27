"""cyb_core.pauses against layouts built by hand with plain loops."""

import pytest
import torch

from cyb_core.pauses import expand_constant, expand_variable

PAUSES = [901, 902, 903, 904, 905, 906, 907]
EOT = 50


def from_steps(e, x):
    """(B, T, W, ...) -> (B, L, ...), the inverse of e.to_steps; zeros on added padding."""
    if e.constant:
        return x.flatten(1, 2)
    B, T, W = e.gather_index.shape
    used = torch.arange(W, device=x.device) < e.steps[..., None]  # (B, T, W)
    rows = torch.arange(B, device=x.device)[:, None, None].expand(B, T, W)
    out = x.new_zeros((B, e.input_ids.shape[1], *x.shape[3:]))
    out[rows[used], e.gather_index[used]] = x[used]
    return out


def slow_expand(ids, mask, steps, pad_id=0):
    """Per-row loops: (ids, position ids, attention, real index, step, labels) as lists."""
    rows = []
    for b in range(len(ids)):
        n_real = 0
        row = {k: [] for k in ("ids", "pos", "att", "real", "step", "labels")}
        for t, x in enumerate(ids[b]):
            real = bool(mask[b][t])
            nxt_real = t + 1 < len(ids[b]) and bool(mask[b][t + 1])
            label = ids[b][t + 1] if real and nxt_real else -100
            for i in range(steps[b][t]):
                row["ids"].append(x if i == 0 or not real else PAUSES[i - 1])
                row["pos"].append(n_real if real else 0)
                row["att"].append(int(real))
                row["real"].append(t)
                row["step"].append(i)
                row["labels"].append(label)
            n_real += real
        rows.append(row)
    L = max(len(r["ids"]) for r in rows)
    fill = {"ids": pad_id, "pos": 0, "att": 0, "real": -1, "step": -1, "labels": -100}
    return {k: torch.tensor([r[k] + [fill[k]] * (L - len(r[k])) for r in rows]) for k in fill}


def check(e, ids, mask, steps, pad_id=0):
    want = slow_expand(ids.tolist(), mask.tolist(), steps.tolist(), pad_id)
    assert e.input_ids.tolist() == want["ids"].tolist()
    assert e.position_ids.tolist() == want["pos"].tolist()
    assert e.attention_mask.tolist() == want["att"].tolist()
    assert e.real_index.tolist() == want["real"].tolist()
    assert e.step.tolist() == want["step"].tolist()
    assert e.labels.tolist() == want["labels"].tolist()
    assert e.steps.tolist() == steps.tolist()


IDS = torch.tensor([[11, 12, 13, 14, 15], [21, 22, 23, 24, 25], [31, 32, EOT, 34, 35]])
MASKS = {
    "none": torch.ones(3, 5, dtype=torch.long),
    "padded": torch.tensor(
        [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    ),  # left, right, packed
}


@pytest.mark.parametrize("W", [1, 2, 3, 4])
@pytest.mark.parametrize("padding", ["none", "padded"])
def test_constant_layout(W, padding):
    mask = MASKS[padding]
    e = expand_constant(IDS, W, PAUSES, attention_mask=None if padding == "none" else mask)
    check(e, IDS, mask, torch.full((3, 5), W))
    assert e.input_ids.shape == (3, 5 * W)
    if W == 1 and padding == "none":
        assert torch.equal(e.input_ids, IDS)
        assert torch.equal(e.position_ids, torch.arange(5).expand(3, 5))


def test_constant_w4_spelled_out():
    e = expand_constant(IDS[2:], 4, PAUSES)
    assert e.input_ids[0, :8].tolist() == [31, 901, 902, 903, 32, 901, 902, 903]
    assert e.position_ids[0].tolist() == [
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        1,
        2,
        2,
        2,
        2,
        3,
        3,
        3,
        3,
        4,
        4,
        4,
        4,
    ]
    assert e.targets.tolist() == [[32, EOT, 34, 35, -100]]  # packed: EOT predicts the next document
    assert e.labels[0, :8].tolist() == [32] * 4 + [EOT] * 4


def test_padding_targets_and_positions():
    e = expand_constant(IDS, 2, PAUSES, attention_mask=MASKS["padded"])
    assert e.targets.tolist() == [
        [-100, -100, 14, 15, -100],
        [22, 23, -100, -100, -100],
        [32, EOT, 34, 35, -100],
    ]
    assert e.position_ids[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    assert e.attention_mask[1].tolist() == [1] * 6 + [0] * 4


@pytest.mark.parametrize("W", [1, 2, 3, 4, 8])
def test_variable_with_omega_one_hot_last_is_constant(W):
    omega = [0.0] * (W - 1) + [1.0]
    a = expand_variable(IDS, W, PAUSES, omega, generator=torch.Generator().manual_seed(0))
    b = expand_constant(IDS, W, PAUSES)
    for field in (
        "input_ids",
        "position_ids",
        "attention_mask",
        "real_index",
        "step",
        "steps",
        "gather_index",
        "targets",
        "labels",
    ):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    x = torch.randn(3, 5 * W, 6)
    assert torch.equal(a.to_steps(x), b.to_steps(x))


@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("padding", ["none", "padded"])
def test_variable_layout(W, padding):
    mask = MASKS[padding]
    e = expand_variable(
        IDS,
        W,
        PAUSES,
        "1:" * (W - 1) + "1",
        generator=torch.Generator().manual_seed(W),
        attention_mask=None if padding == "none" else mask,
        pad_id=7,
    )
    assert ((e.steps >= 1) & (e.steps <= W)).all()
    assert (e.steps[mask == 0] == 1).all()  # no pauses after padding
    check(e, IDS, mask, e.steps, pad_id=7)
    assert e.input_ids.shape[1] == int(e.steps.sum(1).max())


def test_seeded_generator_is_reproducible():
    ids = torch.randint(0, 100, (4, 64))

    def draw(seed):
        return expand_variable(
            ids, 4, PAUSES, "4:1:1:4", generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(draw(3).steps, draw(3).steps)
    assert torch.equal(draw(3).input_ids, draw(3).input_ids)
    assert not torch.equal(draw(3).steps, draw(4).steps)
    counts = torch.bincount((draw(5).steps - 1).flatten(), minlength=4)
    assert counts[0] > counts[1] and counts[3] > counts[2]  # 4:1:1:4 shape on 256 draws


@pytest.mark.parametrize("recipe", ["constant", "variable"])
def test_gather_index_maps_logits_back(recipe):
    W = 4
    mask = MASKS["padded"]
    if recipe == "constant":
        e = expand_constant(IDS, W, PAUSES, attention_mask=mask)
    else:
        e = expand_variable(
            IDS,
            W,
            PAUSES,
            "1:1:1:1",
            generator=torch.Generator().manual_seed(1),
            attention_mask=mask,
        )
    L = e.input_ids.shape[1]
    x = torch.randn(3, L, 5)
    y = e.to_steps(x)  # (B, T, W, 5)
    assert y.shape == (3, 5, W, 5)
    for b in range(3):
        for t in range(5):
            for i in range(W):
                j = min(i, int(e.steps[b, t]) - 1)  # steps past `steps` repeat the last one
                pos = int(e.gather_index[b, t, i])
                assert e.real_index[b, pos] == t and e.step[b, pos] == j
                assert torch.equal(y[b, t, i], x[b, pos])
    back = from_steps(e, y)
    used = e.real_index >= 0
    assert torch.equal(back[used], x[used])
    assert (back[~used] == 0).all()


def test_rejects_missing_pause_ids():
    with pytest.raises(ValueError, match="distinct pause ids"):
        expand_constant(IDS, 4, [901, 902])
    with pytest.raises(ValueError, match="distinct pause ids"):
        expand_constant(IDS, 3, [901, 901])
    with pytest.raises(ValueError, match="expected W = 4"):
        expand_variable(IDS, 4, PAUSES, "1:1")
