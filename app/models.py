"""The Playground's checkpoints for the app: which stored runs have one on disk, each loaded once
per process and shared by every session (`model`, st.cache_resource), and its scores of typed
text cached like query results (`score`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import playground, queries

from .data import TTL, Source, _cache, _read


def device() -> str:
    """Where the playground loads models: `cyb app --device` (CYB_DEVICE), else the CPU."""
    return os.environ.get("CYB_DEVICE") or "cpu"


@_cache
def run_checkpoints(src: Source) -> pd.DataFrame:
    """Stored runs whose checkpoint is on disk (analysis.playground.run_checkpoints); relative
    paths count from the working directory, else from the project around the database."""
    if src.version is None:
        return playground.run_checkpoints(pd.DataFrame(columns=["run_id", "params"]))
    runs = _read(src, queries.run_rows)
    return playground.run_checkpoints(runs, (Path(src.path).parent.parent,))


def checkpoint_stamp(path: str) -> tuple:
    """What changes when a checkpoint is rewritten (it keys the caches below): the files'
    (name, mtime_ns, size); () when the path holds none."""
    p = Path(path)
    files = sorted([*p.glob("*.json"), *p.glob("*.safetensors")]) if p.is_dir() else []
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@st.cache_resource(max_entries=4, show_spinner=False)
def model(path: str, stamp: tuple, dev: str, run_id: str | None) -> playground.Loaded:
    """A checkpoint loaded once per process and shared by every session (read-only: scoring
    and generation never change it); spaCy's pipeline is loaded with the first model so the
    first scoring does not wait for it."""
    from analysis import pos

    loaded = playground.load(path, dev, run_id)
    pos.load_nlp()
    return loaded


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def score(
    path: str, stamp: tuple, dev: str, run_id: str | None, text: str, mode: str
) -> playground.Scored:
    """The playground's scoring of `text` (analysis.playground.score), kept across reruns."""
    return playground.score(model(path, stamp, dev, run_id), text, mode)
