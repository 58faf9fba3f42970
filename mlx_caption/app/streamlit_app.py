"""The mlx-caption web page: upload or draw an image, read its caption and where each word looked.

Started by ``mlx-caption serve`` as ``streamlit run streamlit_app.py -- --checkpoint DIR ...``.
Options come after ``--`` (or from ``MLX_CAPTION_*`` environment variables). Streamlit reruns
this whole script on every interaction, so the model is cached across reruns and sessions
(``st.cache_resource``, keyed by path and weight-file time) and results per session.
"""

# mlx_caption first: it loads the optimized BLAS, which must happen before mlx.core loads.
import mlx_caption  # noqa: F401, I001

import argparse
import hashlib
import os
import sys
from pathlib import Path

import streamlit as st

from mlx_caption.app import heatmap
from mlx_caption.app.captioning import (
    STRATEGY_LABELS,
    CaptionResult,
    Decoding,
    LoadedModel,
    caption_image,
    load_model,
)
from mlx_caption.app.checkpoints import (
    CheckpointAccess,
    checkpoint_mtime,
    checkpoint_options,
    is_checkpoint,
    is_loopback,
    option_label,
)
from mlx_caption.app.drawing import SHAPE_STROKE, background, board_for, drawing_image
from mlx_caption.app.results import ShownCaption, captions_csv, captions_json
from mlx_caption.app.uploads import (
    DEFAULT_MAX_MB,
    DEFAULT_MAX_PIXELS,
    UPLOAD_EXTENSIONS,
    LoadedImage,
    UploadError,
    UploadLimits,
    load_upload,
)
from mlx_caption.errors import UserError

THUMB = 112  # heat-map thumbnail side, pixels
MAX_CACHED_RESULTS = 64  # per browser session
# The canvas's drawing modes, as the page names them.
TOOLS = {"freedraw": "brush", "line": "line", "rect": "rectangle", "circle": "circle"}


def parse_args() -> argparse.Namespace:
    """The options ``mlx-caption serve`` passes after ``--``; env vars as a fallback."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="streamlit_app", add_help=False)
    parser.add_argument("--checkpoint", default=env("MLX_CAPTION_CHECKPOINT"))
    parser.add_argument("--checkpoints-root", default=env("MLX_CAPTION_CHECKPOINTS_ROOT", "."))
    parser.add_argument(
        "--max-upload-mb", type=int, default=int(env("MLX_CAPTION_MAX_UPLOAD_MB", DEFAULT_MAX_MB))
    )
    parser.add_argument(
        "--max-pixels", type=int, default=int(env("MLX_CAPTION_MAX_PIXELS", DEFAULT_MAX_PIXELS))
    )
    parser.add_argument(
        "--allow-any-checkpoint",
        action="store_true",
        default=env("MLX_CAPTION_ALLOW_ANY_CHECKPOINT", "") == "1",
    )
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


def checkpoint_access(args: argparse.Namespace) -> CheckpointAccess:
    """What visitors may load: anything on a loopback address (or when the operator allows
    it), else only what the operator put on offer. The address is the one Streamlit listens
    on, however it was started (unset means every interface)."""
    return CheckpointAccess(
        root=Path(args.checkpoints_root).expanduser(),
        served=args.checkpoint,
        open_to_any=args.allow_any_checkpoint or is_loopback(st.get_option("server.address")),
    )


@st.cache_resource(max_entries=2, show_spinner="Loading the captioner...")
def cached_model(path: str, mtime: float) -> LoadedModel:
    """One loaded model per (path, weights mtime), shared by every session."""
    del mtime  # only part of the cache key: retraining into the same folder reloads
    return load_model(path)


def md_escape(text: str) -> str:
    """Caption text shown literally in Markdown (a model can emit ``*`` or ``_``)."""
    specials = "\\`*_{}[]()<>#+-.!|~$"
    return "".join("\\" + c if c in specials else c for c in text)


def human_count(n: int) -> str:
    """1234567 -> "1.2M"; 52000 -> "52k"."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


# ----------------------------------------------------------------------------- sidebar


def choose_checkpoint(args: argparse.Namespace, access: CheckpointAccess) -> str | None:
    """The model picker: the served checkpoint, those found under the root, or typed text."""
    st.sidebar.header("Model")
    typed_label = "Another folder..."
    options = [*checkpoint_options(args.checkpoint, access.root), typed_label]
    choice = st.sidebar.selectbox(
        "Checkpoint",
        options,
        index=0,
        format_func=lambda p: p if p == typed_label else option_label(p, access.root),
        help="Folders under the checkpoints root holding config.json, model.safetensors and "
        "tokenizer.json, then the zoo's pretrained captioners (converted on first use).",
    )
    if access.note:
        st.sidebar.caption(access.note)
    if choice == typed_label:
        where = "Checkpoint folder" if access.open_to_any else "Folder under the root, or zoo name"
        typed = st.sidebar.text_input(where, placeholder="runs/flickr8k/best")
        return typed.strip() or None
    return choice


def show_model(loaded: LoadedModel) -> None:
    """What is loaded: size, encoder, decoder, training data and validation scores."""
    st.sidebar.caption(
        f"{human_count(loaded.parameters)} parameters · {loaded.grid[0]}x{loaded.grid[1]} "
        f"patches · loaded in {loaded.load_seconds:.1f} s"
    )
    card = loaded.card
    if card is None:
        return
    lines = [("Encoder", card.encoder), ("Decoder", card.decoder)]
    lines += [("Trained on", card.data), ("Scores", card.validation)]
    for name, text in lines:
        if text:
            st.sidebar.caption(f"**{name}:** {md_escape(text)}")


def choose_decoding(max_length: int) -> tuple[Decoding, bool]:
    """Decoding settings from the sidebar, and whether to compute attention maps."""
    st.sidebar.header("Decoding")
    strategy = st.sidebar.radio(
        "Strategy",
        list(STRATEGY_LABELS),
        format_func=STRATEGY_LABELS.get,
        horizontal=True,
        key="strategy",
    )
    length = st.sidebar.slider(
        "Max length (tokens)", 2, max_length, max_length - 1, key="max_length"
    )
    beams, temperature, top_p, samples, seed = 3, 1.0, 0.9, 3, 0
    if strategy == "beam":
        beams = st.sidebar.slider("Beam size", 2, 8, 3, key="num_beams")
    elif strategy == "sample":
        temperature = st.sidebar.slider("Temperature", 0.1, 2.0, 1.0, 0.05, key="temperature")
        top_p = st.sidebar.slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="top_p")
        samples = st.sidebar.slider("Samples", 1, 5, 3, key="samples")
        seed = int(st.sidebar.number_input("Seed", 0, 2**31 - 1, 0, key="seed"))
    attention = st.sidebar.checkbox("Attention heat maps", value=True, key="attention")
    decoding = Decoding(
        strategy=strategy,
        max_length=length,
        num_beams=beams,
        temperature=temperature,
        top_p=top_p,
        samples=samples,
        seed=seed,
    )
    return decoding, attention


# ----------------------------------------------------------------------------- results


def cached_caption(
    loaded: LoadedModel, key: str, image, decoding: Decoding, attention: bool
) -> CaptionResult:
    """Caption once per (model, image bytes, settings) in this session: a rerun caused by an
    unrelated widget does not recompute every image."""
    store: dict = st.session_state.setdefault("results", {})
    full_key = (loaded.path, key, decoding, attention)
    if full_key not in store:
        if len(store) >= MAX_CACHED_RESULTS:
            store.pop(next(iter(store)))
        store[full_key] = caption_image(loaded, image, decoding, attention)
    return store[full_key]


def show_result(
    name: str, image, result: CaptionResult, loaded: LoadedModel, decoding: Decoding
) -> None:
    """One image's card: the picture, the caption, the alternatives and the heat maps."""
    view = heatmap.model_view(image, loaded.model.config.vision.preprocess)
    with st.container(border=True):
        left, right = st.columns([1, 2])
        left.image(view, caption=name, width="stretch")
        with right:
            st.markdown(f"### {md_escape(result.text) or '*(empty caption)*'}")
            note = "" if result.finished else " · cut at max length"
            st.caption(
                f"score {result.score:.3f} · log-probability {result.logprob:.2f} · "
                f"{result.seconds * 1000:.0f} ms{note}"
            )
            if result.alternatives:
                other = "Other samples" if decoding.strategy == "sample" else "Other beams"
                st.markdown(f"**{other}**")
                st.dataframe(
                    [
                        {"caption": text, "score": round(score, 3), "log-prob": round(lp, 2)}
                        for text, score, lp in result.alternatives
                    ],
                    hide_index=True,
                    width="stretch",
                )
        if result.words:
            with st.expander("Where each word looked (cross-attention)", expanded=True):
                thumbs = [heatmap.overlay(view.resize((THUMB, THUMB)), g) for _, g in result.words]
                st.image(thumbs, caption=[w for w, _ in result.words], width=THUMB)


def caption_and_show(
    loaded: LoadedModel, item: LoadedImage, key: str, settings
) -> CaptionResult | None:
    """Caption ``item`` and show it; a model-side error becomes a message, not a traceback."""
    decoding, attention = settings
    for note in item.notes:
        st.warning(note)
    try:
        with st.spinner(f"Captioning {item.name}..."):
            result = cached_caption(loaded, key, item.image, decoding, attention)
    except UserError as err:
        st.error(f"{item.name}: {err}")
        return None
    except Exception as err:  # noqa: BLE001  (the page must keep serving other images)
        st.error(f"{item.name}: captioning failed: {type(err).__name__}: {err}")
        return None
    show_result(item.name, item.image, result, loaded, decoding)
    return result


# ----------------------------------------------------------------------------- inputs


def upload_tab(loaded: LoadedModel, limits: UploadLimits, settings) -> list[ShownCaption]:
    shown: list[ShownCaption] = []
    files = st.file_uploader(
        "Images (JPEG, PNG, WebP, GIF)",
        type=list(UPLOAD_EXTENSIONS),
        accept_multiple_files=True,
        key="uploads",
    )
    if not files:
        st.caption("Upload one or several images to caption them.")
        return shown
    if len(files) > limits.max_files:
        st.warning(f"{len(files)} files uploaded; captioning the first {limits.max_files}.")
        files = files[: limits.max_files]
    for f in files:
        data = f.getvalue()
        try:
            item = load_upload(f.name, data, limits)
        except UploadError as err:
            st.error(str(err))
            continue
        except Exception as err:  # noqa: BLE001  (never a traceback for a bad file)
            st.error(f"{f.name}: cannot read this file ({type(err).__name__}: {err}).")
            continue
        result = caption_and_show(loaded, item, hashlib.sha1(data).hexdigest(), settings)
        if result is not None:
            shown.append(ShownCaption(item.name, result))
    return shown


def draw_tab(loaded: LoadedModel, settings) -> list[ShownCaption]:
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception as err:  # noqa: BLE001  (an optional extra; the upload tab still works)
        st.info(f"Drawing needs streamlit-drawable-canvas ({type(err).__name__}: {err}).")
        return []
    board = board_for(getattr(loaded.model.config, "image_look", None))
    tools = st.columns([1, 1, 2])
    mode = tools[0].selectbox("Tool", list(TOOLS), format_func=TOOLS.get, key="draw_mode")
    colour = tools[1].color_picker("Colour", "#e11e1e", key="draw_colour")
    brushes = board.brushes
    if mode in ("rect", "circle"):
        width = SHAPE_STROKE
        tools[2].caption("Drag out the shape: it is filled with the colour.")
    elif brushes:
        name = tools[2].radio(
            "Brush",
            list(brushes),
            format_func=lambda n: f"{n} ({brushes[n]} px)",
            horizontal=True,
            key="draw_brush",
        )
        width = brushes[name]
    else:
        width = tools[2].slider("Stroke", 1, 40, 12, key="draw_width")
    result = st_canvas(
        fill_color=colour,
        stroke_width=width,
        stroke_color=colour,
        background_image=background(board),
        height=board.canvas,
        width=board.canvas,
        drawing_mode=mode,
        return_image_data=True,
        key=f"canvas-{board.canvas}",
    )
    st.caption(board.describe())
    objects = (result.json_data or {}).get("objects") or []
    if not objects:
        st.caption("Draw something: it is captioned when you lift the pen.")
        return []
    strokes = result.image_data
    if strokes is None:
        return []
    image = drawing_image(strokes, board)
    key = hashlib.sha1(image.tobytes()).hexdigest()
    item = LoadedImage(name="drawing", image=image, format="PNG", original_size=image.size)
    result = caption_and_show(loaded, item, key, settings)
    return [] if result is None else [ShownCaption(item.name, result)]


def offer_downloads(place, shown: list[ShownCaption], model: str, decoding: Decoding) -> None:
    """The sidebar's download buttons: every caption on the page, as JSON and as CSV."""
    with place:
        st.header("Results")
        if not shown:
            st.caption("Caption images to download their captions here.")
            return
        count = f"{len(shown)} caption" + ("s" if len(shown) > 1 else "")
        st.caption(f"{count} on this page, with scores and the other candidates.")
        json_col, csv_col = st.columns(2)
        json_col.download_button(
            "JSON",
            captions_json(shown, model, decoding),
            file_name="captions.json",
            mime="application/json",
            on_click="ignore",
            icon=":material/download:",
            key="download_json",
        )
        csv_col.download_button(
            "CSV",
            captions_csv(shown),
            file_name="captions.csv",
            mime="text/csv",
            on_click="ignore",
            icon=":material/download:",
            key="download_csv",
        )


def no_checkpoint_help(problem: str | None = None) -> None:
    if problem:
        st.error(problem)
    st.info(
        "No captioner is loaded. To get one in a few minutes, train the demo model on "
        "synthetic shapes and serve it:"
    )
    st.code("mlx-caption demo\nmlx-caption serve --checkpoint demo_out/checkpoint", language="bash")
    st.caption(
        "Any folder with `config.json`, `model.safetensors` and `tokenizer.json` works: pick it "
        "in the sidebar, or start the page with `mlx-caption serve --checkpoints-root DIR`."
    )


def main() -> None:
    st.set_page_config(page_title="mlx-caption", layout="wide")
    args = parse_args()
    st.title("mlx-caption")
    st.caption("Pure-MLX image captioning: a vision transformer and a transformer decoder.")
    limits = UploadLimits(max_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels)

    access = checkpoint_access(args)
    picked = choose_checkpoint(args, access)
    if not picked:
        no_checkpoint_help()
        return
    try:
        path = access.resolve(picked)
    except UserError as err:
        st.error(str(err))
        st.info("Pick a checkpoint in the sidebar's list, or type a folder under its root.")
        return
    if Path(path).expanduser().exists() and not is_checkpoint(Path(path).expanduser()):
        no_checkpoint_help(f"{picked} is not a captioner checkpoint folder.")
        return
    try:
        loaded = cached_model(path, checkpoint_mtime(path))
    except UserError as err:
        no_checkpoint_help(str(err))
        return
    except Exception as err:  # noqa: BLE001
        no_checkpoint_help(f"Could not load {picked}: {type(err).__name__}: {err}")
        return
    show_model(loaded)
    settings = choose_decoding(loaded.max_length)
    downloads = st.sidebar.container()  # filled once every caption on the page is known

    upload, draw = st.tabs(["Upload", "Draw"])
    with upload:
        shown = upload_tab(loaded, limits, settings)
    with draw:
        shown += draw_tab(loaded, settings)
    offer_downloads(downloads, shown, option_label(picked, access.root), settings[0])


main()
