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
from mlx_caption.app.checkpoints import checkpoint_mtime, find_checkpoints, is_checkpoint
from mlx_caption.app.uploads import (
    DEFAULT_MAX_MB,
    DEFAULT_MAX_PIXELS,
    UPLOAD_EXTENSIONS,
    LoadedImage,
    UploadError,
    UploadLimits,
    load_upload,
    to_rgb,
)
from mlx_caption import zoo
from mlx_caption.errors import UserError

THUMB = 112  # heat-map thumbnail side, pixels
CANVAS = 256  # drawing canvas side, pixels
MAX_CACHED_RESULTS = 64  # per browser session


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
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


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


def choose_checkpoint(args: argparse.Namespace) -> str | None:
    """The model picker: checkpoints found under the root, the served one, or a typed path."""
    st.sidebar.header("Model")
    root = Path(args.checkpoints_root)
    found = [str(p) for p in find_checkpoints(root)]
    options: list[str] = []
    if args.checkpoint:
        options.append(args.checkpoint)
    options += [p for p in found if p not in options]
    options += [e.name for e in zoo.entries("captioner") if e.name not in options]
    typed_label = "Another folder..."
    options.append(typed_label)

    def label(p: str) -> str:
        if p == typed_label:
            return p
        try:
            return str(Path(p).relative_to(root.resolve()))
        except ValueError:
            return p

    choice = st.sidebar.selectbox(
        "Checkpoint",
        options,
        index=0,
        format_func=label,
        help=f"Folders under {root.resolve()} holding config.json, model.safetensors and "
        "tokenizer.json, then the zoo's pretrained captioners (converted on first use).",
    )
    if choice == typed_label:
        typed = st.sidebar.text_input("Checkpoint folder", placeholder="runs/flickr8k/best")
        return typed.strip() or None
    return choice


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


def caption_and_show(loaded: LoadedModel, item: LoadedImage, key: str, settings) -> None:
    """Caption ``item`` and show it; a model-side error becomes a message, not a traceback."""
    decoding, attention = settings
    for note in item.notes:
        st.warning(note)
    try:
        with st.spinner(f"Captioning {item.name}..."):
            result = cached_caption(loaded, key, item.image, decoding, attention)
    except UserError as err:
        st.error(f"{item.name}: {err}")
        return
    except Exception as err:  # noqa: BLE001  (the page must keep serving other images)
        st.error(f"{item.name}: captioning failed: {type(err).__name__}: {err}")
        return
    show_result(item.name, item.image, result, loaded, decoding)


# ----------------------------------------------------------------------------- inputs


def upload_tab(loaded: LoadedModel, limits: UploadLimits, settings) -> None:
    files = st.file_uploader(
        "Images (JPEG, PNG, WebP, GIF)",
        type=list(UPLOAD_EXTENSIONS),
        accept_multiple_files=True,
        key="uploads",
    )
    if not files:
        st.caption("Upload one or several images to caption them.")
        return
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
        caption_and_show(loaded, item, hashlib.sha1(data).hexdigest(), settings)


def draw_tab(loaded: LoadedModel, settings) -> None:
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception as err:  # noqa: BLE001  (an optional extra; the upload tab still works)
        st.info(f"Drawing needs streamlit-drawable-canvas ({type(err).__name__}: {err}).")
        return
    tools = st.columns([1, 1, 1])
    mode = tools[0].selectbox("Tool", ["freedraw", "line", "rect", "circle"], key="draw_mode")
    colour = tools[1].color_picker("Colour", "#d62728", key="draw_colour")
    width = tools[2].slider("Stroke", 1, 40, 12, key="draw_width")
    result = st_canvas(
        fill_color=colour,
        stroke_width=width,
        stroke_color=colour,
        background_color="#ffffff",
        height=CANVAS,
        width=CANVAS,
        drawing_mode=mode,
        return_image_data=True,
        key="canvas",
    )
    objects = (result.json_data or {}).get("objects") or []
    if not objects:
        st.caption("Draw something: it is captioned when you lift the pen.")
        return
    rgba = result.image_data
    if rgba is None:
        return
    from PIL import Image

    image = to_rgb(Image.fromarray(rgba.astype("uint8"), mode="RGBA"))
    key = hashlib.sha1(image.tobytes()).hexdigest()
    item = LoadedImage(name="drawing", image=image, format="PNG", original_size=image.size)
    caption_and_show(loaded, item, key, settings)


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
    st.caption("Pure-MLX image captioning: a CLIP vision transformer and a transformer decoder.")
    limits = UploadLimits(max_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels)

    path = choose_checkpoint(args)
    if not path:
        no_checkpoint_help()
        return
    if Path(path).expanduser().exists() and not is_checkpoint(Path(path).expanduser()):
        no_checkpoint_help(f"{path} is not a captioner checkpoint folder.")
        return
    try:
        loaded = cached_model(path, checkpoint_mtime(path))
    except UserError as err:
        no_checkpoint_help(str(err))
        return
    except Exception as err:  # noqa: BLE001
        no_checkpoint_help(f"Could not load {path}: {type(err).__name__}: {err}")
        return
    st.sidebar.caption(
        f"{human_count(loaded.parameters)} parameters · encoder {loaded.encoder_name or '?'} · "
        f"{loaded.grid[0]}x{loaded.grid[1]} patches · loaded in {loaded.load_seconds:.1f} s"
    )
    settings = choose_decoding(loaded.max_length)

    upload, draw = st.tabs(["Upload", "Draw"])
    with upload:
        upload_tab(loaded, limits, settings)
    with draw:
        draw_tab(loaded, settings)


main()
