"""A generated captioning data set: coloured shapes with captions that say what, where, how big.

Each image holds one to three shapes (circle, square, triangle, star) in one of six colours,
small or large, laid out so that their places are unambiguous:

- one shape: on the left, on the right, at the top, at the bottom or in the middle;
- two shapes: side by side (left / right) or one above the other (top / bottom);
- three shapes: a row (left, middle, right) or a column (top, middle, bottom).

Every image gets five captions in different phrasings that all state each shape's colour,
kind, size and place (and often the count). No (colour, shape) pair repeats in an image, so a
caption can be scored against the ground-truth scene: :func:`score_objects` parses captions
with the generator's vocabulary and reports pair recall / precision, count, size and position
accuracy. With 24 (colour, shape) pairs, 2 sizes, 5 places and 1-3 objects, the most common
caption (what an image-blind model learns, :func:`blind_baseline_caption`) gets almost all of
them wrong, while a model that looks can get them right.

Geometry is relative to the image size; at the default 64 px a large shape is about 20 px
across and a small one about 12 px, so a 4x4 grid of 16-px patches (or 8x8 of 8 px) resolves
them. Colours are saturated and far apart; the background is a dim grey texture.

Output is Karpathy format (``dataset_synthetic.json`` next to ``images/*.jpg``); each image
entry also carries its ``scene``. The same seed gives byte-identical JSON and identical pixels.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mlx_caption.errors import UserError

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 185, 50),
    "blue": (40, 70, 235),
    "yellow": (245, 225, 30),
    "purple": (165, 50, 215),
    "white": (250, 250, 250),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "middle")
# Radius as a fraction of the image side (jittered by +-_RADIUS_JITTER).
_RADIUS = {"small": 0.09, "large": 0.15}
_RADIUS_JITTER = 0.008
# Each size's circle diameter as a fraction of the image side (a trained model's config records
# them, and the web page sizes its brushes from them).
OBJECT_DIAMETERS = {size: round(2 * r, 4) for size, r in _RADIUS.items()}


def _supersample(size: int) -> int:
    """Shapes are drawn this many times larger and box-filtered: smooth edges, still fast.

    4x at 64 px; big images need less (their edges are a smaller part of the shape).
    """
    return max(1, min(4, 256 // size))


DATASET_FILE = "dataset_synthetic.json"


# --------------------------------------------------------------------------- scenes


def _pick_objects(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.choice(len(pairs), size=n, replace=False)
    return [
        {"colour": pairs[k][0], "shape": pairs[k][1], "size": SIZES[int(rng.integers(2))]}
        for k in chosen
    ]


def random_scene(rng: np.random.Generator, max_objects: int = 3) -> dict[str, Any]:
    """One scene of 1 to ``max_objects`` (at most 3) objects: colour, shape, size, position
    label and geometry (fractions)."""
    n = int(rng.integers(1, max_objects + 1))
    objects = _pick_objects(rng, n)

    def jit(a: float) -> float:
        return float(rng.uniform(-a, a))

    if n == 1:
        layout = "single"
        place = POSITIONS[int(rng.integers(len(POSITIONS)))]
        centre = {
            "left": (0.25, 0.5),
            "right": (0.75, 0.5),
            "top": (0.5, 0.25),
            "bottom": (0.5, 0.75),
            "middle": (0.5, 0.5),
        }[place]
        # Jitter only along the axis that does not decide the place.
        cx = centre[0] + (jit(0.08) if place in ("top", "bottom", "middle") else jit(0.04))
        cy = centre[1] + (jit(0.08) if place in ("left", "right", "middle") else jit(0.04))
        if place == "middle":
            cx, cy = 0.5 + jit(0.04), 0.5 + jit(0.04)
        geometry = [(cx, cy)]
        places = [place]
    elif n == 2:
        layout = "pair_horizontal" if rng.integers(2) == 0 else "pair_vertical"
        a, b = 0.27 + jit(0.04), 0.73 + jit(0.04)
        o1, o2 = 0.5 + jit(0.1), 0.5 + jit(0.1)
        if layout == "pair_horizontal":
            geometry, places = [(a, o1), (b, o2)], ["left", "right"]
        else:
            geometry, places = [(o1, a), (o2, b)], ["top", "bottom"]
    else:
        layout = "row" if rng.integers(2) == 0 else "column"
        steps = [1 / 6 + jit(0.01), 0.5 + jit(0.01), 5 / 6 + jit(0.01)]
        others = [0.5 + jit(0.08) for _ in range(3)]
        if layout == "row":
            geometry = list(zip(steps, others, strict=True))
            places = ["left", "middle", "right"]
        else:
            geometry = list(zip(others, steps, strict=True))
            places = ["top", "middle", "bottom"]
    for obj, (cx, cy), place in zip(objects, geometry, places, strict=True):
        obj["position"] = place
        obj["x"] = round(cx, 4)
        obj["y"] = round(cy, 4)
        obj["r"] = round(_RADIUS[obj["size"]] + jit(_RADIUS_JITTER), 4)
    # Dim, mostly grey: a strong tint would eat into a shape colour's contrast.
    grey = int(rng.integers(55, 110))
    background = [grey + int(t) for t in rng.integers(-12, 13, size=3)]
    return {"layout": layout, "count": n, "objects": objects, "background": background}


# --------------------------------------------------------------------------- captions

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_WHERE = {
    "left": ["on the left", "on the left side", "on the left"],
    "right": ["on the right", "on the right side", "on the right"],
    "top": ["at the top", "at the top", "on the top"],
    "bottom": ["at the bottom", "at the bottom", "on the bottom"],
    "middle": ["in the middle", "in the center", "in the middle"],
}


def _np(obj: Mapping[str, Any]) -> str:
    """Noun phrase: 'a large red circle'."""
    return f"a {obj['size']} {obj['colour']} {obj['shape']}"


def scene_captions(scene: Mapping[str, Any], rng: np.random.Generator) -> list[str]:
    """Five differently phrased captions, each stating colour, kind, size and place."""
    objs = scene["objects"]
    layout = scene["layout"]

    def where(place: str) -> str:
        options = _WHERE[place]
        return options[int(rng.integers(len(options)))]

    if layout == "single":
        (o,) = objs
        w = where(o["position"])
        return [
            f"{_np(o)} {w}",
            f"one shape: {_np(o)} {w}",
            f"there is {_np(o)} {w}",
            f"{w} there is {_np(o)}",
            f"a single {o['size']} {o['colour']} {o['shape']} {w}",
        ]
    if layout in ("pair_horizontal", "pair_vertical"):
        a, b = objs
        if layout == "pair_horizontal":
            first, second, rel, inv, its = (
                "left",
                "right",
                "to the left of",
                "to the right of",
                "to its right",
            )
        else:
            first, second, rel, inv, its = "top", "bottom", "above", "below", "below it"
        return [
            f"{_np(a)} {rel} {_np(b)}",
            f"{_np(b)} {inv} {_np(a)}",
            f"two shapes: {_np(a)} {where(first)} and {_np(b)} {where(second)}",
            f"there are two shapes, {_np(a)} and {_np(b)} {its}",
            f"{where(first)} {_np(a)}, {where(second)} {_np(b)}",
        ]
    a, b, c = objs
    if layout == "row":
        order, line, rel = "from left to right", "in a row", "to the left of"
        p = ("left", "middle", "right")
    else:
        order, line, rel = "from top to bottom", "in a column", "above"
        p = ("top", "middle", "bottom")
    return [
        f"{_np(a)}, {_np(b)} and {_np(c)} {order}",
        f"three shapes: {_np(a)} {where(p[0])}, {_np(b)} {where(p[1])} and {_np(c)} {where(p[2])}",
        f"three shapes {line} {order}: {_np(a)}, {_np(b)}, {_np(c)}",
        f"{_np(a)} {rel} {_np(b)}, which is {rel} {_np(c)}",
        f"{_np(c)} {where(p[2])}, {_np(b)} {where(p[1])} and {_np(a)} {where(p[0])}",
    ]


# --------------------------------------------------------------------------- drawing


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.82  # side 1.64 r: about the area of the circle
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = r * 1.15
        return [
            (cx + R * math.cos(math.radians(a)), cy - R * math.sin(math.radians(a)))
            for a in (90, 210, 330)
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r * 1.12 if k % 2 == 0 else r * 0.5
            a = math.radians(90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return pts
    raise ValueError(shape)


def render_scene(scene: Mapping[str, Any], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw a scene as an RGB image of ``size`` x ``size`` pixels."""
    bg = np.array(scene["background"], dtype=np.float32)
    # Textured background: a soft gradient plus pixel noise, so shapes are not just "any
    # non-flat pixel" and JPEG blocks differ between images.
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gx, gy = rng.uniform(-18, 18, size=2).astype(np.float32)
    grad = (gy * ramp[:, None] + gx * ramp[None, :])[..., None]
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    base = noise * np.float32(7.0) + (bg + grad)

    # Shapes drawn big onto black plus a coverage mask, box-filtered down: the colour layer is
    # then premultiplied by coverage, so compositing is one multiply-add (and much faster than
    # Pillow's RGBA resize).
    big = size * _supersample(size)
    colour_layer = Image.new("RGB", (big, big), (0, 0, 0))
    mask = Image.new("L", (big, big), 0)
    draw_c, draw_m = ImageDraw.Draw(colour_layer), ImageDraw.Draw(mask)
    for obj in scene["objects"]:
        cx, cy, r = obj["x"] * big, obj["y"] * big, obj["r"] * big
        fill = COLOURS[obj["colour"]]
        for draw, value in ((draw_c, fill), (draw_m, 255)):
            if obj["shape"] == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value)
            else:
                draw.polygon(_shape_points(obj["shape"], cx, cy, r), fill=value)
    small = (size, size)
    premul = np.asarray(colour_layer.resize(small, Image.Resampling.BOX), dtype=np.float32)
    alpha = np.asarray(mask.resize(small, Image.Resampling.BOX), dtype=np.float32)[..., None]
    out = premul + base * (1.0 - alpha * np.float32(1 / 255))
    np.clip(out + 0.5, 0, 255, out=out)
    return Image.fromarray(out.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- writing


def _splits(n: int) -> list[str]:
    """80/10/10 by index (scenes are i.i.d., so contiguous blocks are a fair split)."""
    if n < 3:
        return ["train"] * n
    n_val = max(1, round(0.1 * n))
    n_test = max(1, round(0.1 * n))
    n_train = n - n_val - n_test
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _words_commas(text: str) -> list[str]:
    # Commas separate clauses: "on the left a red circle, on the right a blue square".
    return re.findall(r"[a-z]+|,", text.lower())


def _write_images(
    img_dir: Path, first: int, stop: int, seed: int, size: int, quality: int, max_objects: int
) -> list[tuple[dict[str, Any], list[str]]]:
    """Draw and save images ``first..stop-1``; return each one's scene and captions."""
    out = []
    for i in range(first, stop):
        # One generator per image: any image can be regenerated alone, in any order.
        rng = np.random.default_rng([seed, i])
        scene = random_scene(rng, max_objects)
        captions = scene_captions(scene, rng)
        img = render_scene(scene, size, rng)
        img.save(img_dir / f"{i:06d}.jpg", format="JPEG", quality=quality, subsampling=0)
        out.append((scene, captions))
    return out


def write_synthetic_dataset(
    out_dir: str | Path,
    images: int = 2000,
    seed: int = 0,
    size: int = 64,
    quality: int = 95,
    workers: int | None = None,
    max_objects: int = 3,
) -> Path:
    """Write ``images/NNNNNN.jpg`` and ``dataset_synthetic.json`` (Karpathy format) to out_dir.

    Each image entry has ``filepath`` ("images"), ``filename``, ``imgid``, ``split``,
    ``sentids``, ``sentences`` (``raw`` and ``tokens``) and ``scene`` (ground truth). Returns
    the JSON path. Deterministic: same arguments, same bytes, whatever the number of
    ``workers`` (threads drawing blocks of images, default one per CPU core: Pillow releases
    the GIL while it resizes and encodes, so threads do run in parallel). ``max_objects`` 1
    gives one shape per image: an easier set, learnt in far fewer steps.
    """
    if images < 1:
        raise UserError(f"--images must be at least 1, got {images}")
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    if not 1 <= max_objects <= 3:
        raise UserError(f"--max-objects must be 1, 2 or 3, got {max_objects}")
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    if workers is None:  # threads pay off from about a thousand images
        workers = min(os.cpu_count() or 1, max(1, images // 500))
    workers = max(1, workers)
    # A few blocks per worker, so one slow block does not leave the others idle.
    bounds = np.linspace(0, images, 4 * workers + 1).astype(int).tolist()
    blocks = [
        (img_dir, a, b, seed, size, quality, max_objects) for a, b in itertools.pairwise(bounds)
    ]
    with ThreadPoolExecutor(workers) as pool:
        drawn = list(pool.map(_write_images, *zip(*blocks, strict=True)))
    splits = _splits(images)
    entries = []
    sentid = 0
    for i, (scene, captions) in enumerate(item for block in drawn for item in block):
        sentences = []
        for cap in captions:
            sentences.append({"tokens": _words(cap), "raw": cap, "imgid": i, "sentid": sentid})
            sentid += 1
        entries.append(
            {
                "filepath": "images",
                "filename": f"{i:06d}.jpg",
                "imgid": i,
                "split": splits[i],
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
                "scene": scene,
            }
        )
    data = {
        "dataset": "synthetic",
        "generator": {"seed": seed, "size": size, "images": images, "max_objects": max_objects},
        "images": entries,
    }
    path = out / DATASET_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=None, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
    return path


def load_scenes(dataset_json: str | Path, split: str | None = None) -> dict[int, dict[str, Any]]:
    """Ground-truth scenes by image id from a ``dataset_synthetic.json``."""
    data = json.loads(Path(dataset_json).read_text(encoding="utf-8"))
    return {
        e["imgid"]: e["scene"]
        for e in data["images"]
        if "scene" in e and (split is None or e["split"] == split)
    }


def blind_baseline_caption(captions: Iterable[str]) -> str:
    """The most common caption (ties: alphabetically first): what an image-blind model says.

    Pass the training captions (e.g. every ``raw`` sentence of the train split).
    """
    counts = Counter(" ".join(_words(c)) for c in captions)
    if not counts:
        raise UserError("no captions to compute a baseline from")
    best = max(counts.values())
    return min(c for c, n in counts.items() if n == best)


# --------------------------------------------------------------------------- scoring

_SIZE_WORDS = {
    "small": "small",
    "little": "small",
    "tiny": "small",
    "large": "large",
    "big": "large",
}
_COUNT_PATTERNS = [
    (re.compile(r"\b(one|a single|only one) shape\b|\ba single\b"), 1),
    (re.compile(r"\btwo (shapes|objects)\b"), 2),
    (re.compile(r"\bthree (shapes|objects)\b"), 3),
]
_ABS = re.compile(
    r"\b(?:on|in|at) the (left|right|top|bottom|middle|center|centre)(?: (?:side|half|part))?\b"
)
_PLACE_ALIASES = {"center": "middle", "centre": "middle"}
# What the words after a mention say about its place against the next (+1) or the previous (-1)
# mention: (pattern, neighbour, axis, whether the neighbour comes first on that axis, i.e. is
# further left or higher). The first pattern that matches wins.
_NEIGHBOUR_RELATIONS = [
    (re.compile(r"\bto the left of\b"), +1, "x", False),
    (re.compile(r"\bto the right of\b"), +1, "x", True),
    (re.compile(r"\babove\b(?! it)"), +1, "y", False),
    (re.compile(r"\b(below|under|beneath)\b(?! it)"), +1, "y", True),
    (re.compile(r"\bto its right\b"), -1, "x", True),
    (re.compile(r"\bto its left\b"), -1, "x", False),
    (re.compile(r"\b(below|under|beneath) it\b"), -1, "y", True),
    (re.compile(r"\babove it\b"), -1, "y", False),
]
# Orders that place all mentions along an axis: (pattern, axis, whether the mentions come in
# that axis's order). The first pattern that matches wins.
_ORDERS = [
    (re.compile(r"\bfrom left to right\b|\bin a row\b"), "x", True),
    (re.compile(r"\bfrom right to left\b"), "x", False),
    (re.compile(r"\bfrom top to bottom\b|\bin a column\b"), "y", True),
    (re.compile(r"\bfrom bottom to top\b"), "y", False),
]


def _mentions(words: list[str]) -> list[dict[str, Any]]:
    """Object mentions: a shape word with the colour and size words just before it."""
    out = []
    for k, w in enumerate(words):
        shape = w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w
        if shape not in SHAPES:
            continue
        colour = size = None
        start = k
        for j in range(k - 1, max(k - 3, -1), -1):
            if words[j] in COLOURS and colour is None:
                colour, start = words[j], j
            elif words[j] in _SIZE_WORDS and size is None:
                size, start = _SIZE_WORDS[words[j]], j
            else:
                break
        out.append({"shape": shape, "colour": colour, "size": size, "start": start, "end": k + 1})
    return out


def _absolute_places(words: list[str], ments: list[dict[str, Any]]) -> dict[int, str]:
    """Attach each "on the left"-style phrase to a mention.

    A phrase right after a mention (no comma between) is that mention's; otherwise one that
    opens a clause ("on the right, there is a ...") belongs to the mention that follows
    within a few words; otherwise to the mention before it.
    """
    text = " ".join(words)
    places: dict[int, str] = {}
    # Word index of each character offset in ``text``.
    starts = [0]
    for w in words[:-1]:
        starts.append(starts[-1] + len(w) + 1)
    for hit in _ABS.finditer(text):
        p = starts.index(hit.start())
        q = p + len(hit.group(0).split())
        place = _PLACE_ALIASES.get(hit.group(1), hit.group(1))
        owner = None
        for i, m in enumerate(ments):
            if m["end"] == p:
                owner = i
        if owner is None:
            for i, m in enumerate(ments):
                gap = words[q : m["start"]]
                if m["start"] >= q and len(gap) <= 3 and "," not in gap:
                    owner = i
                    break
        if owner is None:
            earlier = [i for i, m in enumerate(ments) if m["end"] <= p]
            owner = earlier[-1] if earlier else None
        if owner is not None:
            places.setdefault(owner, place)
    return places


def parse_caption(text: str) -> dict[str, Any]:
    """Read a caption with the generator's vocabulary.

    Returns ``{"objects": [{"colour", "shape", "size", "position"}], "count": int}``. Places
    come from absolute phrases ("on the left"), relations between neighbouring mentions
    ("to the left of", "above", "below", "to its right") and orders ("from left to right",
    "in a row", "in a column").
    """
    words = _words_commas(text)
    joined = " ".join(words)
    ments = _mentions(words)
    n = len(ments)
    before: dict[str, set[tuple[int, int]]] = {"x": set(), "y": set()}

    for i, m in enumerate(ments):
        seg_end = ments[i + 1]["start"] if i + 1 < n else len(words)
        seg = " ".join(words[m["end"] : seg_end])
        for pattern, neighbour, axis, neighbour_first in _NEIGHBOUR_RELATIONS:
            j = i + neighbour
            if 0 <= j < n and pattern.search(seg):
                before[axis].add((j, i) if neighbour_first else (i, j))
                break

    absolute = _absolute_places(words, ments)

    for pattern, axis, in_order in _ORDERS:
        if pattern.search(joined):
            before[axis].update((i, i + 1) if in_order else (i + 1, i) for i in range(n - 1))
            break

    relative: dict[int, str] = {}
    names = {"x": ("left", "middle", "right"), "y": ("top", "middle", "bottom")}
    for axis, pairs in before.items():
        involved = sorted({i for p in pairs for i in p})
        if len(involved) not in (2, 3):
            continue
        # Rank by how many objects are (transitively) before each one.
        closure = set(pairs)
        for _ in range(len(involved)):
            closure |= {(a, d) for a, b in closure for c, d in closure if b == c}
        for i in involved:
            rank = sum(1 for j in involved if (j, i) in closure)
            labels = names[axis]
            relative[i] = (
                labels[0 if rank == 0 else 2] if len(involved) == 2 else labels[min(rank, 2)]
            )

    objects = []
    for i, m in enumerate(ments):
        objects.append(
            {
                "colour": m["colour"],
                "shape": m["shape"],
                "size": m["size"],
                "position": absolute.get(i, relative.get(i)),
            }
        )
    count = None
    for pattern, value in _COUNT_PATTERNS:
        if pattern.search(joined):
            count = value
            break
    if count is None:
        count = len({(o["colour"], o["shape"]) for o in objects})
    return {"objects": objects, "count": count}


def score_objects(
    captions: Mapping[Any, str], scenes: Mapping[Any, Mapping[str, Any]]
) -> dict[str, float]:
    """Score captions against ground-truth scenes (keys compared as strings).

    - ``pair_recall`` / ``pair_precision`` / ``pair_f1``: (colour, shape) pairs, micro-averaged;
    - ``count_accuracy``: stated count (or number of distinct pairs mentioned) equals the truth;
    - ``size_accuracy`` / ``position_accuracy``: over the pairs found, the stated size / place
      is right (none stated counts as wrong);
    - ``exact``: images whose caption gets every object with its size and place and no extras.
    """
    truth = {str(k): v for k, v in scenes.items()}
    preds = {str(k): v for k, v in captions.items()}
    missing = sorted(set(preds) - set(truth))
    if missing:
        raise UserError(f"{len(missing)} captioned ids have no scene, e.g. {missing[:3]}")
    tp = n_true = n_pred = 0
    count_ok = size_ok = place_ok = exact = 0
    for key, text in preds.items():
        scene = truth[key]
        parsed = parse_caption(text)
        gold = {(o["colour"], o["shape"]): o for o in scene["objects"]}
        seen: dict[tuple, dict] = {}
        for o in parsed["objects"]:
            seen.setdefault((o["colour"], o["shape"]), o)
        matched = [p for p in seen if p in gold]
        tp += len(matched)
        n_true += len(gold)
        n_pred += len(seen)
        count_ok += int(parsed["count"] == scene["count"])
        s_ok = sum(seen[p]["size"] == gold[p]["size"] for p in matched)
        p_ok = sum(seen[p]["position"] == gold[p]["position"] for p in matched)
        size_ok += s_ok
        place_ok += p_ok
        exact += int(
            len(matched) == len(gold) == len(seen) and s_ok == len(gold) and p_ok == len(gold)
        )
    n = len(preds)
    recall = tp / n_true if n_true else 0.0
    precision = tp / n_pred if n_pred else 0.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {
        "images": n,
        "pair_recall": recall,
        "pair_precision": precision,
        "pair_f1": f1,
        "count_accuracy": count_ok / n if n else 0.0,
        "size_accuracy": size_ok / tp if tp else 0.0,
        "position_accuracy": place_ok / tp if tp else 0.0,
        "exact": exact / n if n else 0.0,
    }
