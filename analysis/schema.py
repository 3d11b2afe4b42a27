"""The schema of the evaluation store: its version, the upgrades from older versions, and the
one conversion of incoming token rows to the stored layout (used by the writer and by the
upgrade to version 4). analysis.store applies it; schema.sql holds the tables.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from cyb_core.errors import UserError

from . import summaries
from .staging import sql_string

SCHEMA_VERSION = 5
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
TABLES = (
    "meta",
    "runs",
    "train_log",
    "evals",
    "docs",
    "text_words",
    "token_rows",
    "vocab",
    *summaries.SUMMARY_TABLES,
)
VIEWS = ("tokens", "words")  # the rows as stored before version 4, over token_rows, text_words
# positions per real token of an evaluation: 1 + the pauses in context per token where they
# were placed per token (adaptive, shuffled, uniformK), else W (dense: W-1 after every token)
POSITIONS = """CASE WHEN count(pauses) = count(*) AND count(*) > 0 THEN 1 + avg(pauses) END"""
# Columns an incoming token row may lack (rows written by older code): stored as NULL.
OPTIONAL = ("pauses", "token_class")
# The stored columns of token_rows (expected_pauses, computed from s, is not one of them).
TOKEN_ROWS = tuple(
    """eval_id doc_id idx token_id next_id char_start char_len word upos tag morph word_start
    dk t s greedy_pauses pauses nll correct token_class""".split()
)
# The columns of text_words after text_key, from a relation with the columns of the view `words`
WORD_COLUMNS = """doc_id::VARCHAR AS doc_id, widx::INTEGER AS widx, char_start::INTEGER AS char_start,
    (char_end - char_start)::INTEGER AS char_len, word::VARCHAR AS word, upos::VARCHAR AS upos,
    tag::VARCHAR AS tag, morph::VARCHAR AS morph, sent_start::BOOLEAN AS sent_start,
    space_after::BOOLEAN AS space_after"""
# evals.text_key of an evaluation from its docs (`d`: doc_id, text) and words (`w`: columns
# WORD_COLUMNS; both relations of that evaluation alone): a sum of row hashes, which does not
# depend on the order the rows come in (each row holds its position).
TEXT_KEY = """(SELECT coalesce(sum(hash(doc_id::VARCHAR, text::VARCHAR)), 0) FROM {d})::HUGEINT
    + (SELECT coalesce(sum(hash(doc_id, widx, char_start, char_len, word, upos, tag, morph,
                                sent_start, space_after)), 0) FROM {w})"""


class StoreError(UserError, ValueError):
    """A problem with the store or its input, explained in one line; nothing was written."""


def lean_tokens(source: str, columns) -> tuple[str, str]:
    """(INSERT INTO token_rows, INSERT INTO vocab) statements reading `source`, a relation with
    eval_id and the columns of the `tokens` view (`columns`: the ones it has): single
    precision, small integers, char_end as a length, the token strings once per id."""
    col = {c: (c if c in columns else "NULL") for c in OPTIONAL}
    rows = f"""INSERT INTO token_rows ({", ".join(TOKEN_ROWS)})
        SELECT eval_id, doc_id, idx, token_id, next_id, char_start,
               (char_end - char_start)::USMALLINT, word, upos, tag, morph, word_start,
               dk::FLOAT[], t::FLOAT[], s::FLOAT[], greedy_pauses::USMALLINT,
               {col["pauses"]}::USMALLINT, nll::FLOAT, correct, {col["token_class"]}::VARCHAR
        FROM {source}"""
    vocab = f"""INSERT INTO vocab
        SELECT eval_id, id, any_value(tok) FROM (
            SELECT eval_id, token_id AS id, token AS tok FROM {source}
            UNION ALL SELECT eval_id, next_id, next_token FROM {source})
        GROUP BY eval_id, id"""
    return rows, vocab


def load_rows(con, eval_id: str, docs: str, tokens: str) -> None:
    """Insert one evaluation's docs and its token rows in the stored layout (lean_tokens) from
    Parquet files (paths) with the columns of docs and of the view `tokens`, less eval_id."""
    con.execute(
        "INSERT INTO docs BY NAME SELECT ? AS eval_id, * FROM read_parquet(?)", [eval_id, docs]
    )
    source = (
        f"(SELECT '{sql_string(eval_id)}' AS eval_id, * FROM read_parquet('{sql_string(tokens)}'))"
    )
    for statement in lean_tokens(source, pq.read_schema(tokens).names):
        con.execute(statement)


def _to_version_4(con) -> None:
    """The lean layout: token_rows + vocab behind the view `tokens`, each text's words once
    (text_words behind the view `words`), and the summaries."""
    columns = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tokens_v3'"
        ).fetchall()
    }
    con.execute(SCHEMA_FILE.read_text())
    for statement in lean_tokens("tokens_v3", columns):
        con.execute(statement)
    con.execute("DROP TABLE tokens_v3")
    for (eid,) in con.execute("SELECT eval_id FROM evals ORDER BY eval_id").fetchall():
        add_words(
            con, eid, f"(SELECT {WORD_COLUMNS} FROM words_v3 WHERE eval_id = '{sql_string(eid)}')"
        )
    con.execute("DROP TABLE words_v3")
    summaries.refresh_all(con)


def _to_version_5(con) -> None:
    """The statistics of large evaluations (analysis.large_summaries)."""
    from . import large_summaries  # it reads the groups, which read the store

    con.execute(SCHEMA_FILE.read_text())
    for (eid,) in con.execute("SELECT eval_id FROM evals ORDER BY eval_id").fetchall():
        large_summaries.write(con, eid)


def add_words(con, eval_id: str, words: str) -> None:
    """Set evals.text_key of `eval_id` from its stored docs and its `words` (a relation with
    the columns WORD_COLUMNS) and store the words unless an evaluation of the same text did;
    drop the words no evaluation refers to any more (the text of a replaced evaluation)."""
    docs = f"(SELECT doc_id, text FROM docs WHERE eval_id = '{sql_string(eval_id)}')"
    key = TEXT_KEY.format(d=docs, w=words)
    con.execute(f"UPDATE evals SET text_key = {key} WHERE eval_id = ?", [eval_id])
    # Whether the text's words are stored is asked once: as a NOT EXISTS per word row, DuckDB
    # built a hash table over every stored word row of that text (beyond the writer's memory
    # limit at 50M rows, when a second evaluation of the same text was written).
    (text_key,) = con.execute("SELECT text_key FROM evals WHERE eval_id = ?", [eval_id]).fetchone()
    stored = "SELECT EXISTS (SELECT 1 FROM text_words WHERE text_key = ?)"
    if not con.execute(stored, [text_key]).fetchone()[0]:
        con.execute(f"INSERT INTO text_words SELECT ?::HUGEINT, w.* FROM {words} w", [text_key])
    con.execute(
        "DELETE FROM text_words WHERE text_key NOT IN "
        "(SELECT text_key FROM evals WHERE text_key IS NOT NULL)"
    )


# Each older version -> statements (or functions of the connection) that bring it one version
# up, in one transaction (applied by writers only).
MIGRATIONS = {
    1: ("ALTER TABLE tokens ADD COLUMN IF NOT EXISTS token_class VARCHAR",),
    2: (
        "ALTER TABLE evals ADD COLUMN IF NOT EXISTS positions DOUBLE",
        f"""UPDATE evals SET positions = coalesce(
            (SELECT {POSITIONS} FROM tokens t WHERE t.eval_id = evals.eval_id),
            (SELECT r.w_max FROM runs r WHERE r.run_id = evals.run_id), 1)""",
    ),
    3: (
        "ALTER TABLE tokens RENAME TO tokens_v3",
        "ALTER TABLE words RENAME TO words_v3",
        "ALTER TABLE evals ADD COLUMN IF NOT EXISTS tokens_key HUGEINT",
        "ALTER TABLE evals ADD COLUMN IF NOT EXISTS text_key HUGEINT",
        _to_version_4,
    ),
    4: (_to_version_5,),
}


def schema_version(con) -> int | None:
    """The stored schema version; None for an empty database. Raises for a non-cyb database:
    one with other tables, or whose `meta` is not ours (other columns, no schema version)."""
    names = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    if not names:
        return None
    listed = ", ".join(sorted(names)[:5])
    foreign = StoreError(f"not a cyb database (tables {listed}); use another --db")
    if "meta" not in names:
        raise foreign
    columns = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'meta'"
        ).fetchall()
    }
    if columns != {"key", "value"}:
        raise foreign
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if not rows:
        raise foreign
    try:
        return int(rows[0][0])
    except (TypeError, ValueError):
        raise foreign from None


def check_version(con, path, upgradable: bool = False) -> None:
    """Refuse a database this code cannot read (or, `upgradable`, upgrade) in one line."""
    found = schema_version(con)
    if found is None or found == SCHEMA_VERSION or (upgradable and found in MIGRATIONS):
        return
    hint = (
        "write one evaluation into it (`cyb eval ... --db` upgrades it) or use another --db"
        if found in MIGRATIONS
        else "use another --db (or move that file away)"
    )
    raise StoreError(f"{path} has schema version {found}, this code uses {SCHEMA_VERSION}; {hint}")


def apply_schema(con) -> None:
    """Create what is missing and upgrade an older version; refuses an unknown version."""
    check_version(con, "the database", upgradable=True)
    found = schema_version(con)
    while found is not None and found < SCHEMA_VERSION:
        con.begin()
        for statement in MIGRATIONS[found]:
            statement(con) if callable(statement) else con.execute(statement)
        found += 1
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(found)])
        con.commit()
    con.begin()  # tables and version row together: a kill leaves an empty file, not a foreign one
    con.execute(SCHEMA_FILE.read_text())
    con.execute(
        "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
        [str(SCHEMA_VERSION)],
    )
    con.commit()
