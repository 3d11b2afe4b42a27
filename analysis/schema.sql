-- The cyb evaluation store. Applied by analysis.schema.apply_schema(), which also records
-- SCHEMA_VERSION (analysis/schema.py) in `meta`; every statement is idempotent, so applying it
-- to a current database changes nothing. Bump SCHEMA_VERSION whenever a table changes.

CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per evaluated model: a training run directory or any compatible checkpoint.
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,       -- run directory name (or checkpoint directory name)
    variant VARCHAR,                  -- a name of cyb_core.variants.VARIANTS
    recipe VARCHAR,                   -- constant (Recipe 1) | variable (Recipe 2)
    w_max INTEGER,                    -- steps per real token W (1 = no pauses)
    params JSON,                      -- {"cyb": CYB settings, "config": run config.json, "checkpoint": path}
    seed INTEGER,
    train_tokens BIGINT,              -- real tokens seen in training (last log line), else the budget
    base VARCHAR,                     -- the checkpoint the run started from
    status VARCHAR,                   -- complete (final model) | partial (last checkpoint) | checkpoint
    created_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS train_log (
    run_id VARCHAR,
    step INTEGER,
    tokens_seen BIGINT,
    loss DOUBLE,
    lr DOUBLE,
    mean_expected_pauses DOUBLE,
    elapsed_s DOUBLE
);

-- One row per (run, dataset, mode); eval_id = run_id:dataset:mode.
CREATE TABLE IF NOT EXISTS evals (
    eval_id VARCHAR PRIMARY KEY,
    run_id VARCHAR,
    dataset VARCHAR,                  -- split name, or text/<file name> for a user's file
    mode VARCHAR,                     -- dense | adaptive | shuffled | uniformK (cyb_core.names)
    n_tokens BIGINT,
    ppl DOUBLE,                       -- exp(mean nll) over all rows of the evaluation
    mean_expected_pauses DOUBLE,
    status VARCHAR,                   -- complete; readers only ever see complete evaluations
    created_at TIMESTAMP,
    positions DOUBLE,                 -- positions per real token: 1 + mean pauses in context
                                      -- (dense: W). Added in schema version 3.
    tokens_key HUGEINT,               -- fingerprint of the rows' (doc_id, idx, token_id) in order:
                                      -- equal for evaluations of the same tokens. Version 4.
    text_key HUGEINT                  -- fingerprint of the evaluated documents and their words
                                      -- (text_words): equal for evaluations of the same text. Version 4.
);

CREATE TABLE IF NOT EXISTS docs (
    eval_id VARCHAR,
    doc_id VARCHAR,
    text VARCHAR
);

-- spaCy tokens of the evaluated text (whitespace tokens left out): the CoNLL-U export's words.
-- Stored once per text (evals.text_key), shared by every evaluation of that text; read them
-- through the view `words` below, one row per evaluation and word as before version 4.
CREATE TABLE IF NOT EXISTS text_words (
    text_key HUGEINT,
    doc_id VARCHAR,
    widx INTEGER,                     -- position of the word in its document
    char_start INTEGER,
    char_len INTEGER,                 -- char_end - char_start
    word VARCHAR,
    upos VARCHAR,
    tag VARCHAR,
    morph VARCHAR,
    sent_start BOOLEAN,
    space_after BOOLEAN
);

CREATE VIEW IF NOT EXISTS words AS
SELECT e.eval_id, w.doc_id, w.widx, w.char_start, w.char_start + w.char_len AS char_end, w.word,
       w.upos, w.tag, w.morph, w.sent_start, w.space_after
FROM evals e JOIN text_words w ON w.text_key = e.text_key;

-- One row per real input token x_t; its pauses come after it, next_id x_{t+1} is the target.
-- Read it through the view `tokens` below, which adds the decoded tokens and char_end.
-- Schema version 4 made it lean: single precision for probabilities and losses (the model
-- computes them in fp32 or bf16), small integers, and no column that can be derived
-- (expected_pauses is computed from s when read: not stored).
CREATE TABLE IF NOT EXISTS token_rows (
    eval_id VARCHAR,
    doc_id VARCHAR,
    idx INTEGER,                      -- position of the input token in its document
    token_id INTEGER,
    next_id INTEGER,
    char_start INTEGER,               -- span of the input token in docs.text (end of text: empty span)
    char_len USMALLINT,               -- char_end - char_start
    word VARCHAR,                     -- spaCy token covering the first non-space character (NULL: none)
    upos VARCHAR,
    tag VARCHAR,
    morph VARCHAR,
    word_start BOOLEAN,               -- that character is the first one of the spaCy token
    dk FLOAT[],                       -- d_0..d_{W-2}; adaptive: NULL for steps not taken
    t FLOAT[],                        -- t_0..t_{W-1}; adaptive: NULL for steps not taken
    s FLOAT[],                        -- s_0..s_{W-1}; adaptive: one-hot at the answer step
    expected_pauses FLOAT GENERATED ALWAYS AS (list_dot_product(s, range(len(s))::FLOAT[])) VIRTUAL,
                                      -- sum_i i s_i (single precision, as the model sums it)
    greedy_pauses USMALLINT,
    pauses USMALLINT,                 -- pauses in context (adaptive, shuffled, uniformK); NULL in dense mode
    nll FLOAT,                        -- -log p(next token)
    correct BOOLEAN,
    token_class VARCHAR               -- class of the *next* token (the one predicted): natural |
                                      -- synthetic (a synthetic line) | answer (its answer);
                                      -- cyb_core.synthetic.classify. Added in schema version 2.
);

-- The decoded text of every token id an evaluation holds (inputs and targets); byte-level
-- BPE: a token may start with a space or hold part of a character.
CREATE TABLE IF NOT EXISTS vocab (
    eval_id VARCHAR,
    token_id INTEGER,
    token VARCHAR
);

-- The token rows as they were stored before version 4 (same columns, same meaning).
CREATE VIEW IF NOT EXISTS tokens AS
SELECT r.eval_id, r.doc_id, r.idx, r.token_id, a.token, r.next_id, b.token AS next_token,
       r.char_start, r.char_start + r.char_len AS char_end, r.word, r.upos, r.tag, r.morph,
       r.word_start, r.dk, r.t, r.s, r.expected_pauses, r.greedy_pauses, r.pauses, r.nll,
       r.correct, r.token_class
FROM token_rows r
LEFT JOIN vocab a ON a.eval_id = r.eval_id AND a.token_id = r.token_id
LEFT JOIN vocab b ON b.eval_id = r.eval_id AND b.token_id = r.next_id;

-- Summaries of each evaluation, computed when it is written (analysis.summaries), so that no
-- page reads every row for them. Sums and counts, not means: the means of any set of classes
-- are exact. token_class NULL: rows stored before classes existed.
CREATE TABLE IF NOT EXISTS class_stats (
    eval_id VARCHAR,
    token_class VARCHAR,
    n BIGINT,                         -- rows
    sum_nll DOUBLE,
    n_correct BIGINT,
    sum_expected DOUBLE,              -- sum of expected_pauses
    sum_greedy BIGINT,                -- sum of greedy_pauses
    n_paused BIGINT,                  -- rows with greedy_pauses > 0
    sum_pauses BIGINT,                -- pauses in context, over the n_pauses rows that have them
    n_pauses BIGINT,
    sum_log_gain DOUBLE,              -- log t_{W-1} - log t_0 (floored at 1e-30), rows with W > 1
    n_log_gain BIGINT,
    sum_log_t0 DOUBLE,                -- log t_0 (floored at 1e-30)
    n_log_t0 BIGINT
);

-- Per class and step i: the sum of s_i over the n rows that have it (the mean halting distribution).
CREATE TABLE IF NOT EXISTS step_stats (
    eval_id VARCHAR,
    token_class VARCHAR,
    step SMALLINT,
    n BIGINT,
    sum_s DOUBLE
);

-- Per step i < W-1: Spearman (on every row with both values) of d_i with t_{i+1} - t_i;
-- token_class NULL: all rows (with Pearson), else one class (with the partial Spearman on t_i).
CREATE TABLE IF NOT EXISTS calibration (
    eval_id VARCHAR,
    token_class VARCHAR,
    step SMALLINT,
    n BIGINT,
    spearman DOUBLE,
    partial_spearman DOUBLE,
    pearson DOUBLE,
    mean_d DOUBLE,
    mean_gain DOUBLE
);

-- Per step i < W-1: counts of (d_i, t_{i+1} - t_i) on a 240 x 240 grid over [0, 1] x [-1, 1]
-- (empty cells left out); every grid of 240 / k bins per axis is a sum of its cells.
CREATE TABLE IF NOT EXISTS calibration_cells (
    eval_id VARCHAR,
    step SMALLINT,
    d_bin SMALLINT,
    gain_bin SMALLINT,
    n BIGINT
);

-- Statistics of each evaluation of at least analysis.large_summaries.LARGE rows (version 5):
-- what the Tokens and Linguistics pages read instead of every row. Smaller evaluations have
-- none (their rows are aggregated when asked). scope: a class, or '*' for every row;
-- measure: expected | greedy | observed (analysis.groups.MEASURES).
CREATE TABLE IF NOT EXISTS type_stats (
    eval_id VARCHAR,
    scope VARCHAR,
    measure VARCHAR,
    token_id INTEGER,                 -- the input token
    n BIGINT,
    mean DOUBLE,
    median DOUBLE,
    variance DOUBLE                   -- sample variance; NULL for a type seen once
);

CREATE TABLE IF NOT EXISTS group_stats (
    eval_id VARCHAR,
    group_by VARCHAR,                 -- a key of analysis.groups.GROUPS
    scope VARCHAR,
    measure VARCHAR,
    grp VARCHAR,
    n BIGINT,
    mean DOUBLE,
    median DOUBLE,
    variance DOUBLE
);

-- the bootstrap's histogram: value bins of 1 / analysis.groups.BIN pauses, each at its mean
CREATE TABLE IF NOT EXISTS group_hist (
    eval_id VARCHAR,
    group_by VARCHAR,
    scope VARCHAR,
    measure VARCHAR,
    grp VARCHAR,
    bin DOUBLE,
    n BIGINT,
    v DOUBLE
);
