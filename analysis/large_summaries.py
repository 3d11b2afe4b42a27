"""Per-type and per-group statistics stored with each large evaluation (LARGE rows or more):
what the Tokens and Linguistics pages read instead of aggregating every row.

Smaller evaluations are aggregated from their rows when asked: that is fast at their size, and
a summary with a row per token type would take more room than their rows. Written by
analysis.summaries.refresh in the writer's transaction (and by the upgrade to schema version 5);
read by analysis.queries.token_stats and analysis.groups.group_summary, which return the same
frames either way (tests compare the two paths). `scope` is a class name, or ALL for every row.
"""

from __future__ import annotations

import pandas as pd

from cyb_core.names import observes_pauses

from .groups import BIN, GROUPS, _measure, _rows
from .store import require_eval

LARGE = 1_000_000  # rows of an evaluation from which its statistics are stored
TABLES = ("type_stats", "group_stats", "group_hist")
ALL = "*"  # the scope of every row; a class is one of analysis.classes.CLASSES

# every row (grouping(token_class) = 1) and each class; rows without a class count in ALL only
_SCOPE = f"CASE WHEN grouping(token_class) = 1 THEN '{ALL}' ELSE token_class END"
_SCOPED = "HAVING grouping(token_class) = 1 OR token_class IS NOT NULL"


def _scoped(k: str, rows: str, x: str) -> str:
    """Relation (scope, k, x): the rows of evaluation $e with a key k and a value x, every one
    under ALL and each with a class under its class too."""
    base = f"(SELECT token_class, {k} AS k, {x} AS x FROM {rows} WHERE eval_id = $e)"
    return f"""(SELECT '{ALL}' AS scope, k, x FROM {base} WHERE x IS NOT NULL AND k IS NOT NULL
               UNION ALL SELECT token_class, k, x FROM {base}
               WHERE x IS NOT NULL AND k IS NOT NULL AND token_class IS NOT NULL)"""


def medians(r: str) -> str:
    """SQL: a query of the exact median of x per (scope, k) of the relation `r` (no NULL x),
    in memory that does not grow with the rows.

    DuckDB's median() keeps every value of a group in memory, which a 50M-row evaluation does
    not fit in the writer's memory limit (store.WRITE_MEMORY). Here a histogram per key (value
    bins of 1 / BIN; a hash aggregate, which spills) finds the bins that hold the two middle
    ranks, (n - 1) // 2 and n // 2, and only the rows in those bins are sorted. The result is
    DuckDB's median: (lo + hi) / 2 of the middle values, to the last bit.
    """
    return f"""WITH r AS NOT MATERIALIZED (SELECT * FROM {r}),
        h AS (SELECT scope, k, round(x * {BIN}) AS bin, count(*) AS c FROM r GROUP BY ALL),
        mid AS (SELECT * FROM (
                    SELECT *, sum(c) OVER (PARTITION BY scope, k ORDER BY bin
                                           ROWS UNBOUNDED PRECEDING) - c AS before,
                              sum(c) OVER (PARTITION BY scope, k) AS n
                    FROM h)
                WHERE before <= n // 2 AND (n - 1) // 2 < before + c),
        picked AS (SELECT r.scope, r.k, r.x, mid.n, mid.before - 1
                          + row_number() OVER (PARTITION BY r.scope, r.k, mid.bin ORDER BY r.x) AS rank
                   FROM r JOIN mid
                   ON r.scope = mid.scope AND r.k = mid.k AND round(r.x * {BIN}) = mid.bin)
        SELECT scope, k, (min(x) + max(x)) / 2 AS median FROM picked
        WHERE rank BETWEEN (n - 1) // 2 AND n // 2 GROUP BY scope, k"""


def _stats(table: str, key: str, rows: str, x: str, by: str = "") -> str:
    """INSERT of the (n, mean, median, variance) per scope and key into `table`, whose
    columns are (eval_id, [by,] scope, measure, key, n, mean, median, variance)."""
    r = _scoped(key, rows, x)
    return f"""INSERT INTO {table}
        SELECT $e, {by + ", " if by else ""}s.scope, $m, s.k, s.n, s.mean, m.median, s.variance
        FROM (SELECT scope, k, count(*) AS n, avg(x) AS mean, var_samp(x) AS variance
              FROM {r} GROUP BY scope, k) s
        JOIN ({medians(r)}) m ON m.scope = s.scope AND m.k = s.k"""


_GROUP_ROWS = """(SELECT token_class, {g} AS grp, {x} AS x FROM {rows} WHERE eval_id = $e)
WHERE x IS NOT NULL AND grp IS NOT NULL"""

_GROUP_HIST = f"""INSERT INTO group_hist
SELECT $e, $by, {_SCOPE}, $m, grp, round(x * {BIN}), count(*), avg(x)
FROM {_GROUP_ROWS}
GROUP BY GROUPING SETS ((token_class, grp, round(x * {BIN})), (grp, round(x * {BIN}))) {_SCOPED}"""


def measures(mode: str) -> tuple[str, ...]:
    """The measures an evaluation in `mode` has (observed: where pauses were placed)."""
    return ("expected", "greedy", "observed") if observes_pauses(mode) else ("expected", "greedy")


def write(con, eval_id: str) -> None:
    """Replace the statistics of one evaluation, stored when it is large (after its rows and
    its evals row, in the caller's transaction)."""
    for table in TABLES:  # constants
        con.execute(f"DELETE FROM {table} WHERE eval_id = ?", [eval_id])
    info = require_eval(con, eval_id)
    if info["n_tokens"] < LARGE:
        return
    for m in measures(info["mode"]):
        x = _measure(info, m)
        con.execute(_stats("type_stats", "token_id", "token_rows", x), {"e": eval_id, "m": m})
        for by, g in GROUPS.items():
            p = {"e": eval_id, "m": m, "by": by}
            con.execute(_stats("group_stats", g, _rows(g), x, by="$by"), p)
            con.execute(_GROUP_HIST.format(g=g, x=x, rows=_rows(g)), p)


def stored(con, table: str, eval_id: str) -> bool:
    """Whether `table` (one of TABLES, a constant) holds the evaluation's statistics."""
    return con.execute(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE eval_id = ?)", [eval_id]
    ).fetchall()[0][0]


def type_stats(con, eval_id: str, measure: str, min_count: int, token_class: str | None):
    """analysis.queries.token_stats from type_stats."""
    return con.execute(
        """SELECT s.token_id, v.token, s.n, s.mean, s.median, s.variance FROM type_stats s
           LEFT JOIN vocab v ON v.eval_id = $e AND v.token_id = s.token_id
           WHERE s.eval_id = $e AND s.scope = $c AND s.measure = $m AND s.n >= $min
           ORDER BY s.n DESC, s.token_id""",
        {"e": eval_id, "c": token_class or ALL, "m": measure, "min": min_count},
    ).df()


def group_summary(
    con, eval_id: str, by: str, measure: str, token_class: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """analysis.groups.group_summary from group_stats and group_hist."""
    p = {"e": eval_id, "by": by, "c": token_class or ALL, "m": measure}
    where = "WHERE eval_id = $e AND group_by = $by AND scope = $c AND measure = $m"
    stats = con.execute(
        "SELECT grp, n, mean, median, coalesce(variance, 0) AS variance "
        f"FROM group_stats {where} ORDER BY grp",
        p,
    ).df()
    hist = con.execute(f"SELECT grp, bin, n, v FROM group_hist {where} ORDER BY grp, bin", p).df()
    return stats, hist
