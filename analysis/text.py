"""The Text page's queries: the documents of an evaluation, one page of a document's token rows
with their text, and the per-token nll of two evaluations of the same text."""

from __future__ import annotations

import pandas as pd

from .store import require_eval


def documents(con, eval_id: str) -> pd.DataFrame:
    """The documents of one evaluation: doc_id and its number of token rows."""
    require_eval(con, eval_id)
    return con.execute(
        "SELECT doc_id, count(*) AS n_tokens FROM token_rows WHERE eval_id = ? GROUP BY doc_id ORDER BY doc_id",
        [eval_id],
    ).df()


def doc_page(con, eval_id: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Token rows idx in [start, start + n) of one document, with the text of each token
    (`piece`, and `gap` up to the next one) and the previous row's values (`prev_*`: the
    pauses spent before predicting this token)."""
    return con.execute(
        """WITH r AS (
               SELECT t.idx, t.token_id, t.token, t.next_token, t.word, t.upos, t.tag, t.dk, t.t, t.s,
                      t.expected_pauses, t.greedy_pauses, t.pauses, t.nll, t.char_start, t.char_end,
                      lead(t.char_start) OVER (ORDER BY t.idx) AS next_start,
                      lag(t.token) OVER w AS prev_token, lag(t.dk) OVER w AS prev_dk, lag(t.t) OVER w AS prev_t,
                      lag(t.s) OVER w AS prev_s, lag(t.expected_pauses) OVER w AS prev_expected_pauses,
                      lag(t.greedy_pauses) OVER w AS prev_greedy_pauses, lag(t.pauses) OVER w AS prev_pauses,
                      lag(t.nll) OVER w AS prev_nll
               FROM tokens t
               WHERE t.eval_id = $e AND t.doc_id = $d AND t.idx >= $start - 1 AND t.idx <= $start + $n
               WINDOW w AS (ORDER BY t.idx))
           SELECT r.* EXCLUDE (next_start),
                  substr(d.text, r.char_start + 1, r.char_end - r.char_start) AS piece,
                  CASE WHEN r.next_start > r.char_end
                       THEN substr(d.text, r.char_end + 1, r.next_start - r.char_end) ELSE '' END AS gap
           FROM r JOIN docs d ON d.eval_id = $e AND d.doc_id = $d
           WHERE r.idx >= $start AND r.idx < $start + $n
           ORDER BY r.idx""",
        {"e": eval_id, "d": doc_id, "start": start, "n": n},
    ).df()


def nll_gain(con, eval_a: str, eval_b: str, doc_id: str, start: int, n: int) -> pd.DataFrame:
    """Per token idx in [start, start + n) of one document evaluated in both: nll_a, nll_b and
    gain = nll_a - nll_b (positive: B predicts it better), e.g. a baseline's minus a control's:
    where extra positions pay. Tokens are matched by position and id."""
    for e in (eval_a, eval_b):
        require_eval(con, e)
    return con.execute(
        """SELECT a.idx, a.token_id, a.nll::DOUBLE AS nll_a, b.nll::DOUBLE AS nll_b,
                  a.nll::DOUBLE - b.nll::DOUBLE AS gain
           FROM token_rows a JOIN token_rows b ON b.eval_id = $b AND b.doc_id = a.doc_id
                AND b.idx = a.idx AND b.token_id = a.token_id
           WHERE a.eval_id = $a AND a.doc_id = $d AND a.idx >= $start AND a.idx < $start + $n
           ORDER BY a.idx""",
        {"a": eval_a, "b": eval_b, "d": doc_id, "start": start, "n": n},
    ).df()
