"""Summaries of an evaluation computed once, when it is written (and by the upgrade to schema
version 4 for evaluations stored before): per-class sums, the mean halting distribution,
calibration (Spearman on every row) and the calibration density on a fine grid. The pages
read these instead of every token row; what they show stays exact.

`refresh(con, eval_id)` replaces one evaluation's summaries inside the caller's transaction.
"""

from __future__ import annotations

# the last three: only for evaluations of analysis.large_summaries.LARGE rows or more
SUMMARY_TABLES = ("class_stats", "step_stats", "calibration", "calibration_cells",
                  "type_stats", "group_stats", "group_hist")  # fmt: skip
GRID = 240  # calibration cells per axis: every bins count that divides it is exact from them

_CLASS_STATS = """
INSERT INTO class_stats
SELECT eval_id, token_class, count(*), sum(nll), count(*) FILTER (correct), sum(expected_pauses),
       sum(greedy_pauses), count(*) FILTER (greedy_pauses > 0), sum(pauses), count(pauses),
       sum(g), count(g), sum(l0), count(l0)
FROM (SELECT *, CASE WHEN len(t) > 1 THEN ln(greatest(t[len(t)], 1e-30)) - ln(greatest(t[1], 1e-30))
                END AS g, ln(greatest(t[1], 1e-30)) AS l0
      FROM token_rows WHERE eval_id = $e)
GROUP BY eval_id, token_class"""

_STEP_STATS = """
INSERT INTO step_stats
SELECT $e, token_class, i, count(s[i + 1]), sum(s[i + 1])
FROM (SELECT token_class, unnest(range(len(s))) AS i, s FROM token_rows WHERE eval_id = $e)
GROUP BY ALL"""

# per step i: x = d_i, y = t_{i+1} - t_i, z = t_i, c = the row's class
_STEPS = """WITH v AS (SELECT token_class AS c, i, dk[i + 1]::DOUBLE AS x,
                          t[i + 2]::DOUBLE - t[i + 1]::DOUBLE AS y, t[i + 1]::DOUBLE AS z
                   FROM (SELECT unnest(range(len(dk))) AS i, dk, t, token_class
                         FROM token_rows WHERE eval_id = $e)),
            f AS (SELECT * FROM v WHERE x IS NOT NULL AND y IS NOT NULL AND NOT isnan(x) AND NOT isnan(y))"""


def _rank(col: str, part: str) -> str:
    """Average rank of `col` within `part`, from one sort: ties share the mean of their first
    position (rank) and their last (count of the rows up to and including the ties)."""
    w = f"(PARTITION BY {part} ORDER BY {col})"
    return f"(rank() OVER {w} + count(*) OVER {w}) / 2.0"


# Spearman is Pearson on average ranks.
_CALIBRATION_ALL = (
    _STEPS
    + f""",
        r AS (SELECT i, x, y, {_rank("x", "i")} AS rx, {_rank("y", "i")} AS ry FROM f)
    INSERT INTO calibration
    SELECT $e, NULL, i, count(*), corr(rx, ry), NULL, corr(x, y), avg(x), avg(y) FROM r GROUP BY i"""
)

# per class, also the partial Spearman given t_i (analysis.classes)
_CALIBRATION_CLASSES = (
    _STEPS
    + f""",
        g AS (SELECT * FROM f WHERE z IS NOT NULL AND NOT isnan(z) AND c IS NOT NULL),
        r AS (SELECT c, i, x, y, {_rank("x", "c, i")} AS rx, {_rank("y", "c, i")} AS ry,
                     {_rank("z", "c, i")} AS rz FROM g),
        k AS MATERIALIZED (
              SELECT c, i, count(*) AS n, corr(rx, ry) AS rxy, corr(rx, rz) AS rxz,
                     corr(ry, rz) AS ryz, corr(x, y) AS pxy, avg(x) AS mean_d, avg(y) AS mean_gain
              FROM r GROUP BY c, i)
    INSERT INTO calibration
    SELECT $e, c, i, n, rxy,
           CASE WHEN (1 - rxz * rxz) * (1 - ryz * ryz) > 1e-9  -- else t_i fixes a rank: undefined
                THEN (rxy - rxz * ryz) / sqrt((1 - rxz * rxz) * (1 - ryz * ryz)) END,
           pxy, mean_d, mean_gain
    FROM k"""
)
# Every row of one class (none NULL): the ranks within the class are the ranks over all rows,
# and a row with y has z (t_i), so the overall row comes from the same ranks (sorts halved).
_CALIBRATION_ONE_CLASS = (
    _CALIBRATION_CLASSES
    + "\n    UNION ALL SELECT $e, NULL, i, n, rxy, NULL, pxy, mean_d, mean_gain FROM k"
)

_CELLS = (
    _STEPS
    + f"""
    INSERT INTO calibration_cells
    SELECT $e, i, least(floor(x * {GRID}), {GRID - 1}), least(floor((y + 1) / 2 * {GRID}), {GRID - 1}),
           count(*)
    FROM f GROUP BY ALL"""
)

_TOKENS_KEY = """
UPDATE evals SET tokens_key = (
    SELECT sum(hash(rn, doc_id, idx, token_id))
    FROM (SELECT row_number() OVER () AS rn, doc_id, idx, token_id FROM token_rows WHERE eval_id = $e))
WHERE eval_id = $e"""


def refresh(con, eval_id: str) -> None:
    """Recompute every summary of one evaluation from its token rows (in the caller's
    transaction). The rank windows sort each step's rows; DuckDB spills them to disk beyond
    its memory limit, so memory stays bounded."""
    for table in SUMMARY_TABLES:
        con.execute(f"DELETE FROM {table} WHERE eval_id = ?", [eval_id])
    for sql in (_CLASS_STATS, _STEP_STATS):
        con.execute(sql, {"e": eval_id})
    one_class = con.execute(
        "SELECT count(*) = 1 AND count(token_class) = 1 FROM class_stats WHERE eval_id = ?",
        [eval_id],
    ).fetchall()[0][0]
    calibrate(con, eval_id, one_class)
    con.execute(_CELLS, {"e": eval_id})
    con.execute(_TOKENS_KEY, {"e": eval_id})
    from . import large_summaries  # it reads the groups, which read the store

    large_summaries.write(con, eval_id)


def calibrate(con, eval_id: str, one_class: bool) -> None:
    """The calibration rows of one evaluation; `one_class`: every row has the same class
    (the overall row then comes from the class's ranks; tests compare both ways)."""
    sqls = (_CALIBRATION_ONE_CLASS,) if one_class else (_CALIBRATION_ALL, _CALIBRATION_CLASSES)
    for sql in sqls:
        con.execute(sql, {"e": eval_id})


def refresh_all(con) -> None:
    """Summaries of every stored evaluation (the upgrade to schema version 4)."""
    for (eid,) in con.execute("SELECT eval_id FROM evals ORDER BY eval_id").fetchall():
        refresh(con, eid)
