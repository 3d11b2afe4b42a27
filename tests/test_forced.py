"""Forced evaluation (the placement control) against the evaluations it must reproduce."""

import numpy as np
import pytest
from support import DOCS, tiny_model

from cyb_core import forced
from cyb_core.adaptive import adaptive_eval
from cyb_core.dense import dense_eval

ATOL = 1e-5  # one parallel pass vs adaptive's cached step-by-step pass, fp32 (seen: ~1e-7)


@pytest.fixture
def model():  # fresh per test: with_settings changes the model it is called on
    return tiny_model(4).with_settings(recipe="variable")


def per_doc(res, values):
    return [values[res.doc == j] for j in range(len(DOCS))]


def assert_same(a, b):
    np.testing.assert_array_equal(a.doc, b.doc)
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.next_id, b.next_id)
    np.testing.assert_array_equal(a.pauses, b.pauses)
    np.testing.assert_allclose(a.nll, b.nll, atol=ATOL, rtol=0)
    np.testing.assert_allclose(a.t, b.t, atol=ATOL, rtol=0)  # NaN in the same places
    np.testing.assert_allclose(a.d, b.d, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(a.s, b.s)


def test_identity_permutation_reproduces_adaptive(model):
    # DK drawn with probability d (seeded), so rows take 0, 1, 2 and 3 pauses
    ada = adaptive_eval(model, DOCS, seq_len=16, batch_size=2, dk_threshold=None, progress=False)
    assert set(ada.pauses.tolist()) == {0, 1, 2, 3}
    got = forced.forced_eval(model, DOCS, per_doc(ada, ada.pauses), seq_len=16, progress=False)
    assert_same(got, ada)
    np.testing.assert_array_equal(got.correct, ada.correct)


def test_shuffle_keeps_each_documents_multiset_and_is_seeded():
    counts = [np.array([0, 1, 2, 3, 3, 0, 1]), np.array([2, 2, 0])]
    a, b = forced.shuffle_counts(counts, 1), forced.shuffle_counts(counts, 1)
    for c, x, y in zip(counts, a, b, strict=True):
        np.testing.assert_array_equal(np.sort(x), np.sort(c))
        np.testing.assert_array_equal(x, y)
    assert any(
        not np.array_equal(x, c)
        for x, c in zip(forced.shuffle_counts(counts, 2), counts, strict=True)
    )


def test_uniform_last_step_equals_dense_read_at_the_last_step(model):
    tbys = model.with_settings(w=4, psi=0.9, variant="tbys")  # dense: read at step W-1
    dense = dense_eval(tbys, DOCS, seq_len=16, progress=False)
    got = forced.forced_eval(
        model, DOCS, forced.uniform_counts(model, DOCS, 3), seq_len=16, progress=False
    )
    np.testing.assert_allclose(got.nll, dense.nll, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.t, dense.t, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(got.correct, dense.correct)
    assert (got.pauses == 3).all()


def test_uniform_zero_is_a_plain_forward(model):
    got = forced.forced_eval(
        model, DOCS, forced.uniform_counts(model, DOCS, 0), seq_len=16, progress=False
    )
    plain = model.with_settings(w=1, psi=0.9, variant="baseline")  # no pauses anywhere
    dense = dense_eval(plain, DOCS, seq_len=16, progress=False)
    assert np.isnan(got.t[:, 1:]).all()
    np.testing.assert_allclose(got.nll, dense.nll, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "counts, message",
    [
        ([np.zeros(3, dtype=int)], "documents"),
        ("short", "tokens but"),
        ("too many", "must be in 0..3"),
    ],
)
def test_bad_counts_are_refused(model, counts, message):
    good = forced.uniform_counts(model, DOCS, 1)
    if counts == "short":
        counts = [good[0][:-1], *good[1:]]
    elif counts == "too many":
        counts = [good[0] + 3, *good[1:]]
    with pytest.raises(ValueError, match=message):
        forced.forced_eval(model, DOCS, counts, progress=False)


def test_cli_shuffled_and_uniform_are_stored_with_their_positions(model, tmp_path, capsys):
    import duckdb

    from cyb.cli import main

    ckpt, db, text = tmp_path / "ckpt", tmp_path / "e.duckdb", tmp_path / "t.txt"
    model.save(ckpt)
    text.write_text(" ".join(DOCS))
    base = ["eval", str(ckpt), "--text", str(text), "--db", str(db), "--no-progress"]
    base += ["--seq-len", "16"]
    # the placement control needs the adaptive evaluation it permutes: one line, exit 1
    assert main([*base, "--mode", "shuffled"]) == 1
    assert "--mode adaptive" in capsys.readouterr().err
    assert main([*base, "--mode", "uniform"]) == 1  # uniform without --pauses
    assert main([*base, "--mode", "uniform", "--pauses", "4"]) == 1  # W = 4: at most 3
    assert "--pauses 3 or less" in capsys.readouterr().err
    assert not db.exists()
    for extra in (["--mode", "adaptive", "--dk-threshold", "0.3"], ["--mode", "shuffled"]):
        assert main([*base, *extra]) == 0
    for k in (0, 3):
        assert main([*base, "--mode", "uniform", "--pauses", str(k)]) == 0
    con = duckdb.connect(str(db), read_only=True)
    got = dict(con.execute("SELECT mode, positions FROM evals").fetchall())
    counts = {
        mode: sorted(
            r[0]
            for r in con.execute(
                "SELECT pauses FROM tokens JOIN evals USING (eval_id) WHERE mode = ?", [mode]
            ).fetchall()
        )
        for mode in ("adaptive", "shuffled")
    }
    con.close()
    assert set(got) == {"adaptive", "shuffled", "uniform0", "uniform3"}
    assert got["uniform0"] == 1 and got["uniform3"] == 4
    assert got["shuffled"] == pytest.approx(got["adaptive"])  # the same positions, moved
    assert counts["shuffled"] == counts["adaptive"]  # the same multiset of counts
