"""Playground: type text and see at once where a model pauses (one run or two side by side),
generate with pauses, and save a scored text as an ordinary evaluation."""

import shlex

import streamlit as st

from analysis import playground as pg
from app import charts, data, models, state, token_html, ui
from cyb_core.names import LIVE_MODES

PATH = "<path>"  # the run picker's option for a checkpoint path typed in
TEXT = (
    "The committee met on Tuesday to discuss the budget, and after a long debate it agreed "
    "to fund the new library.\nCora had 339 apples and found 129 more: 339 + 129 = 468 apples.\n"
    "Check the sum: 94 + 72 = 166."
)
PROMPT = "Jon had 6 stamps and found 20 more:"
RECIPES = {
    "constant": "Recipe 1: W-1 pauses after every token",
    "variable": "Recipe 2: pauses when the model asks",
}

f = state.current_or_none()  # None: no evaluation stored yet, so no sidebar
src = f.src if f else data.source()
dev = models.device()
# A box's value outlives a run that does not draw it (a failed checkpoint stops the page before
# the boxes), but the browser then redraws the box with its default, empty, while the page
# scores the kept text: setting the value anew on every run sends it with the box.
for key, default in {"pg_text": TEXT, "pg_prompt": PROMPT}.items():
    st.session_state[key] = st.session_state.get(key, default)
st.title("Playground")
st.caption(
    "Type or paste text and see which of its tokens make a model pause, with the Text page's "
    "colours and hover details; continue a prompt with pauses. Models are loaded once on "
    f"`{dev}` and shared by every session. Nothing is written to the database until you save."
)

by_run = {}  # run_id -> its row of data.run_checkpoints
with ui.problems(error=True):
    by_run = {r["run_id"]: r for r in models.run_checkpoints(src).to_dict("records")}


def run_label(option) -> str:
    if option is None:
        return "nothing (one run)"
    if option == PATH:
        return "a checkpoint path..."
    r = by_run[option]
    return f"{option} ({r['variant'] or '?'}, W={r['w'] or '?'})"


def pick(col, side: str, optional: bool):
    """(path, run_id) of the checkpoint chosen on one side; None for none."""
    options = [*([None] if optional else []), *by_run, PATH]
    default = None if optional else (f.run if f and f.run in by_run else options[0])
    choice = col.selectbox(
        f"Run {side}",
        options,
        index=options.index(default),
        key=f"pg_run_{side}",
        format_func=run_label,
        help="runs of the database whose checkpoint is on disk, or any checkpoint by its path",
    )
    if choice is None:
        return None
    if choice == PATH:
        path = col.text_input(
            f"Checkpoint of {side}",
            key=f"pg_path_{side}",
            placeholder="data/base, runs/NAME or runs/NAME/final",
        )
        return path.strip(), None
    return by_run[choice]["checkpoint"], choice


def load(choice):
    path, run_id = choice
    with st.spinner(f"loading {path} on {dev}..."):
        return models.model(path, models.checkpoint_stamp(path), dev, run_id)


left, right = st.columns(2)
choices = {"A": pick(left, "A", False), "B": pick(right, "B", True)}
loaded = {}
for side, choice in choices.items():
    if choice is not None and not choice[0]:  # a path still to be typed
        st.info(
            f"Type the path of a run directory or checkpoint for {side} (e.g. data/base), then Enter.",
            icon=":material/info:",
        )
    elif choice is not None:
        with ui.problems(error=True):
            loaded[side] = load(choice)
if "A" not in loaded:
    st.stop()
labels = {s: f"{s}: {m.target.run_id}" for s, m in loaded.items()}

# ----------------------------------------------------------------------------- scoring

st.subheader("Where it pauses")
text = st.text_area(
    "Text",
    key="pg_text",
    height=140,
    help=f"at most {pg.MAX_CHARS:,} characters; Ctrl+Enter (or leaving the box) scores it",
)
c1, c2, _ = st.columns([1, 2, 2])
mode = c1.radio(
    "Mode",
    list(LIVE_MODES),
    key="pg_mode",
    horizontal=True,
    help="dense: expected pauses with W-1 pauses after every token (Recipe 1); adaptive: the "
    "pauses the model takes when it chooses (Recipe 2), as `cyb eval --mode`",
)
colour = c2.radio(
    "Colour",
    ["input", "predicted"],
    key="pg_colour",
    horizontal=True,
    format_func={"input": "token followed by the pauses", "predicted": "predicted token"}.get,
)
with ui.problems(error=True):
    pg.check_text(text)  # the limit's message before any model work
    with st.spinner("scoring..."):
        scored = {
            s: models.score(
                choices[s][0],
                models.checkpoint_stamp(choices[s][0]),
                dev,
                choices[s][1],
                text,
                mode,
            )
            for s in loaded
        }
    rows, hist = pg.view(list(scored.values()))
    rows = dict(zip(scored, rows, strict=True))
    w = max(s.w for s in scored.values())
    for s, sc in scored.items():
        m = sc.summary
        st.caption(
            f"**{labels[s]}** (W={sc.w}): {m['n_tokens']:,} tokens, perplexity {m['ppl']:.2f}, "
            f"mean expected pauses {m['mean_expected_pauses']:.3f}"
        )
    if len(scored) == 1:
        st.html(token_html.legend_html(w))
        st.html(token_html.text_html(rows["A"], w, colour))
    else:
        both, diff = st.tabs(["Side by side", "Difference (B minus A)"])
        with both:
            st.html(token_html.legend_html(w))
            cols = st.columns(2)
            for col, s in zip(cols, scored, strict=True):
                col.markdown(f"**{labels[s]}**")
                col.html(token_html.text_html(rows[s], w, colour))
        with diff:
            st.html(token_html.diff_legend_html(w))
            st.html(token_html.diff_html(rows["A"], rows["B"], w, colour, ("A", "B")))
    names = dict(zip(map(str, range(len(scored))), (labels[s] for s in scored), strict=True))
    fig = charts.pause_histogram(hist.assign(run=hist["run"].map(names)), height=280)
    ui.chart(fig, "pg_hist")

    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    dataset = c1.text_input(
        "Save as dataset",
        key="pg_dataset",
        placeholder=pg.dataset_name(text),
        help="the dataset name of the stored evaluation (empty: the placeholder); saving the same "
        "run under the same name again replaces it",
    )
    if c2.button("Save to the database", key="pg_save", icon=":material/save:"):
        ids = [
            pg.save(sc, src.path, dataset or None, run_id=choices[s][1]) for s, sc in scored.items()
        ]
        st.success(
            f"Saved {', '.join(f'`{e}`' for e in ids)} to {src.path}: choose its dataset in "
            "the sidebar to see it on every page.",
            icon=":material/check:",
        )

# ----------------------------------------------------------------------------- generation

st.subheader("Generate with pauses")
model_a = loaded["A"]
prompt = st.text_area(
    "Prompt", key="pg_prompt", height=80, help=f"at most {pg.MAX_PROMPT_CHARS:,} characters"
)
c = st.columns(5)
recipe = c[0].radio(
    "Recipe",
    list(RECIPES),
    index=list(RECIPES).index(model_a.model.settings.recipe),
    key="pg_recipe",
    format_func=RECIPES.get,
)
decoding = c[1].radio("Tokens", ["greedy", "sampled"], key="pg_decoding", help="argmax or a draw")
readout = c[2].radio(
    "Answer step",
    ["greedy", "sample"],
    key="pg_readout",
    help="greedy: answer at the first step with d < 0.5; sample: pause with probability d",
)
seed = c[3].number_input("Seed", 0, 2**31 - 1, 0, key="pg_seed", help="for every draw")
max_new = c[4].number_input("Max new tokens", 1, pg.MAX_NEW_TOKENS, 40, key="pg_max_new")
b1, b2, _ = st.columns([1, 1, 4])
start = b1.button("Generate", key="pg_generate", type="primary", icon=":material/play_arrow:")
b2.button("Stop", key="pg_stop", icon=":material/stop:", help="stops a generation under way")
out, note = st.empty(), st.empty()
gen = st.session_state.get("pg_gen")
if gen and gen["status"] == "running" and not start:
    gen["status"] = "stopped"  # a click (Stop, or any other widget) ended the run producing it
if start:
    with ui.problems(error=True):
        tokens = pg.generate(
            model_a,
            prompt,
            recipe=recipe,
            max_new_tokens=int(max_new),
            sample=decoding == "sampled",
            readout=readout,
            seed=int(seed),
        )
        gen = dict(
            prompt=prompt.replace("\r\n", "\n"),
            pieces=[],
            pauses=[],
            w=model_a.w,
            recipe=recipe,
            max_new=int(max_new),
            status="running",
            command=(
                f"cyb generate {shlex.quote(str(model_a.target.checkpoint))} --prompt "
                f"{shlex.quote(prompt)} --recipe {recipe} --max-new-tokens {int(max_new)} "
                f"--readout {readout}"
                + (" --sample" if decoding == "sampled" else "")
                + f" --seed {int(seed)} --show-pauses"
            ),
        )
        st.session_state["pg_gen"] = gen
        for piece, k in tokens:  # each token drawn as it comes; a click interrupts here
            gen["pieces"].append(piece)
            gen["pauses"].append(k)
            out.html(
                token_html.generation_html(
                    gen["prompt"], gen["pieces"], gen["pauses"], gen["w"], recipe
                )
            )
            note.caption(f"generating: {len(gen['pieces'])} tokens so far (Stop ends it)")
        gen["status"] = "done"
if gen:
    html = token_html.generation_html(
        gen["prompt"], gen["pieces"], gen["pauses"], gen["w"], gen["recipe"]
    )
    out.html(html)
    n = len(gen["pieces"])
    mean = sum(gen["pauses"]) / n if n else 0.0
    how = {
        "stopped": "stopped",
        "running": "generating",
        "done": "reached max new tokens" if n >= gen["max_new"] else "ended at end of text",
    }[gen["status"]]
    note.caption(f"{n} tokens, {how}; {mean:.2f} pauses per token on average")
    st.code(gen["prompt"] + token_html.show_pauses(gen["pieces"], gen["pauses"]), language=None)
    st.caption(f"the same from the command line: `{gen['command']}`")
    st.button(
        "Score prompt + continuation",
        key="pg_score_gen",
        on_click=lambda g=gen: st.session_state.update(pg_text=g["prompt"] + "".join(g["pieces"])),
        help="put the generated text in the text box above",
    )
