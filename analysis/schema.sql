-- The cyb evaluation store. Applied by analysis.store.apply_schema(), which also records
-- SCHEMA_VERSION (analysis/store.py) in `meta`; every statement is idempotent, so applying it
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
    positions DOUBLE                  -- positions per real token: 1 + mean pauses in context
                                      -- (dense: W). Added in schema version 3.
);

CREATE TABLE IF NOT EXISTS docs (
    eval_id VARCHAR,
    doc_id VARCHAR,
    text VARCHAR
);

-- spaCy tokens of the evaluated text (whitespace tokens left out): the CoNLL-U export's words.
CREATE TABLE IF NOT EXISTS words (
    eval_id VARCHAR,
    doc_id VARCHAR,
    widx INTEGER,                     -- position of the word in its document
    char_start INTEGER,
    char_end INTEGER,
    word VARCHAR,
    upos VARCHAR,
    tag VARCHAR,
    morph VARCHAR,
    sent_start BOOLEAN,
    space_after BOOLEAN
);

-- One row per real input token x_t; its pauses come after it, next_token x_{t+1} is the target.
CREATE TABLE IF NOT EXISTS tokens (
    eval_id VARCHAR,
    doc_id VARCHAR,
    idx INTEGER,                      -- position of the input token in its document
    token_id INTEGER,
    token VARCHAR,                    -- the input token, decoded (byte-level BPE: may start with a space)
    next_id INTEGER,
    next_token VARCHAR,
    char_start INTEGER,               -- span of the input token in docs.text (end of text: empty span)
    char_end INTEGER,
    word VARCHAR,                     -- spaCy token covering the first non-space character (NULL: none)
    upos VARCHAR,
    tag VARCHAR,
    morph VARCHAR,
    word_start BOOLEAN,               -- that character is the first one of the spaCy token
    dk DOUBLE[],                      -- d_0..d_{W-2}; adaptive: NULL for steps not taken
    t DOUBLE[],                       -- t_0..t_{W-1}; adaptive: NULL for steps not taken
    s DOUBLE[],                       -- s_0..s_{W-1}; adaptive: one-hot at the answer step
    expected_pauses DOUBLE,
    greedy_pauses INTEGER,
    pauses INTEGER,                   -- pauses in context (adaptive, shuffled, uniformK); NULL in dense mode
    nll DOUBLE,                       -- -log p(next token)
    correct BOOLEAN,
    token_class VARCHAR               -- class of the *next* token (the one predicted): natural |
                                      -- synthetic (a synthetic line) | answer (its answer);
                                      -- cyb_core.synthetic.classify. Added in schema version 2.
);
