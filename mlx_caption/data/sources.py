"""Caption data sources: annotation files in, :class:`Record` lists out, images checked once.

Formats (``load_records(format, annotations, images)``):

- ``karpathy``: Karpathy's ``dataset_*.json`` (``images[*].filepath/filename/split/sentences``);
  ``restval`` counts as ``train``; the image is ``images/filepath/filename``.
- ``flickr``: ``IMAGE.jpg#K<TAB>caption`` token files (Flickr8k / Flickr30k). Split files
  beside it (``*trainImages.txt``, ``*devImages.txt``, ``*testImages.txt``) or given by
  ``split_files`` assign splits; images listed in none of them go to ``train`` (they are not
  in val or test, so nothing leaks; the count is reported as ``unlisted``), or are dropped
  with ``unlisted="drop"``. Without split files every image is ``train`` (or ``split``).
- ``coco``: COCO captions JSON (``images`` + ``annotations``); the split is ``split`` or taken
  from the file name (``captions_val2014.json`` -> ``val``), else ``train``.
- ``csv`` / ``jsonl``: one row per caption (or a list of captions in a row); columns
  ``image``, ``caption`` and optional ``split`` / ``id`` (names configurable). Rows of one
  image are grouped, in order of first appearance.
- ``folder``: every image under ``images`` (or ``annotations``) with a ``.txt`` of the same
  name beside it, one caption per line. A first path part named train / val / test is the
  split.

Every image path must stay inside the image root: ``../``, absolute paths elsewhere and
symlinks that lead out are refused and counted, never opened. ``captions_only=True`` is for
callers that never open an image (``mlx-caption score``): no image root is needed, nothing is
refused, and ``Record.image`` is the path as the annotations write it.

:class:`ImageValidator` opens each file once (Pillow ``verify`` plus a full decode) and
remembers the verdict keyed by path, mtime and size (in memory, optionally in a JSON file),
so a missing or corrupt file is dropped before an epoch starts instead of raising inside
mlx-data's iteration. It also notes which files mlx-data cannot decode faithfully (grayscale,
alpha, palette, CMYK, 16-bit, WebP, EXIF-rotated): the pipeline converts those in Python.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlx_caption.errors import UserError
from mlx_caption.files import read_json

FORMATS = ("karpathy", "flickr", "coco", "csv", "jsonl", "folder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_ALIASES = {"restval": "train", "dev": "val", "validation": "val", "valid": "val"}

# Turns an annotation's image path parts into the record's image path, or None if refused.
Resolve = Callable[..., str | None]


@dataclass
class Record:
    """One image and its reference captions."""

    image: str  # absolute path inside the image root
    captions: list[str]
    split: str
    id: str | int


@dataclass
class LoadReport:
    """What :func:`load_records` left out, and why."""

    refused: list[tuple[str, str]] = field(default_factory=list)  # (split, path as written)
    no_captions: list[tuple[str, str]] = field(default_factory=list)  # (split, path)
    unlisted: int = 0  # flickr: images in no split file
    bad_rows: int = 0  # lines / rows that could not be parsed
    # karpathy: split names as the file writes them, before SPLIT_ALIASES (for messages that
    # should name what the user sees in the file, like "restval").
    split_names: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "refused": len(self.refused),
            "no_captions": len(self.no_captions),
            "unlisted": self.unlisted,
            "bad_rows": self.bad_rows,
        }


def normalize_split(name: str | None, default: str = "train") -> str:
    """``restval`` -> ``train``, ``dev``/``validation`` -> ``val``; empty -> default."""
    if not name:
        return default
    name = str(name).strip().lower()
    return SPLIT_ALIASES.get(name, name)


def _as_written(*parts: str, split: str) -> str:
    """The image path as the annotations write it (captions only: nothing will open it)."""
    return "/".join(p for p in parts if p)


class _Resolver:
    """Joins annotation paths onto the image root and refuses any that leave it."""

    def __init__(self, root: Path, report: LoadReport) -> None:
        self.root = Path(os.path.realpath(root))
        self.report = report

    def __call__(self, *parts: str, split: str) -> str | None:
        written = _as_written(*parts, split=split)
        joined = os.path.join(self.root, *[p for p in parts if p])
        # realpath follows symlinks: a link inside the root that points outside is refused.
        real = os.path.realpath(joined)
        if os.path.commonpath([real, str(self.root)]) != str(self.root):
            self.report.refused.append((split, written))
            return None
        return real


def _keep(records: list[Record], report: LoadReport, image: str | None, caps, split, id_) -> None:
    if image is None:
        return
    caps = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
    if not caps:
        report.no_captions.append((split, image))
        return
    records.append(Record(image=image, captions=caps, split=split, id=id_))


# --------------------------------------------------------------------------- formats


def _karpathy(ann: Path, data: Any, resolve: Resolve, report: LoadReport) -> list[Record]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{ann}: not a Karpathy split file (no 'images' list)")
    records: list[Record] = []
    for k, e in enumerate(data["images"]):
        if not isinstance(e, dict) or "filename" not in e:
            report.bad_rows += 1
            continue
        if e.get("split"):
            report.split_names.add(str(e["split"]))
        s = normalize_split(e.get("split"))
        caps = [
            sent.get("raw") or " ".join(sent.get("tokens", []))
            for sent in e.get("sentences", [])
            if isinstance(sent, dict)
        ]
        id_ = e.get("cocoid", e.get("imgid", k))
        _keep(records, report, resolve(e.get("filepath", ""), e["filename"], split=s), caps, s, id_)
    return records


def _split_files(ann: Path, given: dict[str, str | Path] | None) -> dict[str, str]:
    """Image name -> split, from Flickr-style split lists."""
    if given is None:
        given = {}
        for p in sorted(ann.parent.glob("*Images.txt")):
            low = p.name.lower()
            for key, split in (
                ("train", "train"),
                ("dev", "val"),
                ("val", "val"),
                ("test", "test"),
            ):
                if key in low:
                    given[split] = p
                    break
    out: dict[str, str] = {}
    for split, path in given.items():
        try:
            names = Path(path).read_text(encoding="utf-8").split()
        except OSError as err:
            raise UserError(f"cannot read split file {path}: {err}") from err
        for name in names:
            out[name] = normalize_split(split)
    return out


def _flickr(
    ann: Path,
    resolve: Resolve,
    split: str | None,
    report: LoadReport,
    split_files: dict[str, str | Path] | None,
    unlisted: str,
) -> list[Record]:
    try:
        lines = ann.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {ann}: {err}") from err
    grouped: dict[str, list[str]] = {}
    for line in lines:
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        if not sep:
            report.bad_rows += 1
            continue
        name = key.rsplit("#", 1)[0].strip()
        grouped.setdefault(name, []).append(caption)
    if not grouped:
        raise UserError(f"{ann}: no 'IMAGE#K<TAB>caption' lines found")
    splits = _split_files(ann, split_files)
    records: list[Record] = []
    for name, caps in grouped.items():
        if splits:
            s = splits.get(name)
            if s is None:
                report.unlisted += 1
                if unlisted == "drop":
                    continue
                s = normalize_split(unlisted)
        else:
            s = normalize_split(split)
        _keep(records, report, resolve(name, split=s), caps, s, Path(name).stem)
    return records


def _coco(
    ann: Path, data: Any, resolve: Resolve, split: str | None, report: LoadReport
) -> list[Record]:
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise UserError(f"{ann}: not a COCO captions file (needs 'images' and 'annotations')")
    if split is None:
        m = re.search(r"(train|val|test|restval)", ann.name.lower())
        split = m.group(1) if m else None
    s = normalize_split(split)
    caps: dict[Any, list[str]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a:
            report.bad_rows += 1
            continue
        caps.setdefault(a["image_id"], []).append(a.get("caption", ""))
    records: list[Record] = []
    for img in data["images"]:
        if not isinstance(img, dict) or "file_name" not in img:
            report.bad_rows += 1
            continue
        id_ = img.get("id")
        _keep(records, report, resolve(img["file_name"], split=s), caps.get(id_, []), s, id_)
    return records


def _rows_csv(ann: Path) -> list[dict[str, Any]]:
    try:
        with ann.open(newline="", encoding="utf-8-sig") as f:
            head = f.read(8192)
            f.seek(0)
            try:
                # Flickr30k's results.csv is "image_name| comment_number| comment".
                dialect = csv.Sniffer().sniff(head, delimiters=",|\t;")
            except csv.Error:
                dialect = csv.excel
            rows = list(csv.DictReader(f, dialect=dialect))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {ann}: {err}") from err
    return [
        {(k or "").strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()}
        for row in rows
    ]


def _rows_jsonl(ann: Path, report: LoadReport) -> list[dict[str, Any]]:
    rows = []
    try:
        text = ann.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {ann}: {err}") from err
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            report.bad_rows += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            report.bad_rows += 1
    return rows


def _table(
    rows: list[dict[str, Any]],
    resolve: Resolve,
    split: str | None,
    report: LoadReport,
    columns: dict[str, str],
    ann: Path,
) -> list[Record]:
    img_col, cap_col = columns["image"], columns["caption"]
    split_col, id_col = columns["split"], columns["id"]
    if rows and img_col not in rows[0] and all(img_col not in r for r in rows):
        raise UserError(f"{ann}: no column {img_col!r} (found {sorted(rows[0])})")
    if rows and all(cap_col not in r for r in rows):
        raise UserError(f"{ann}: no column {cap_col!r} (found {sorted(rows[0])})")
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row.get(img_col)
        if not name:
            report.bad_rows += 1
            continue
        g = grouped.setdefault(
            str(name),
            {
                "caps": [],
                "split": normalize_split(row.get(split_col), normalize_split(split)),
                "id": row.get(id_col) if row.get(id_col) not in (None, "") else None,
            },
        )
        value = row.get(cap_col)
        g["caps"].extend(value if isinstance(value, list) else [value])
    records: list[Record] = []
    for name, g in grouped.items():
        # Without an id column the id is the path minus its suffix (unique, unlike the stem).
        id_ = g["id"] if g["id"] is not None else str(Path(name).with_suffix(""))
        _keep(records, report, resolve(name, split=g["split"]), g["caps"], g["split"], id_)
    return records


def _folder(root: Path, split: str | None, report: LoadReport) -> list[Record]:
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    resolve = _Resolver(root, report)
    records: list[Record] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.is_dir():
            continue
        rel = path.relative_to(root)
        first = rel.parts[0].lower() if len(rel.parts) > 1 else ""
        s = normalize_split(first) if normalize_split(first) in ("train", "val", "test") else None
        s = s or normalize_split(split)
        txt = path.with_suffix(".txt")
        caps = []
        if txt.is_file():
            try:
                caps = txt.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                report.bad_rows += 1
        image = resolve(str(rel), split=s)
        _keep(records, report, image, caps, s, str(rel.with_suffix("")))
    return records


def load_records(
    format: str,
    annotations: str | Path | None,
    images: str | Path | None = None,
    *,
    split: str | None = None,
    split_files: dict[str, str | Path] | None = None,
    unlisted: str = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    split_column: str = "split",
    id_column: str = "id",
    report: LoadReport | None = None,
    captions_only: bool = False,
    parsed_json: Any = None,
) -> list[Record]:
    """Read an annotation source into records (see the module docstring for formats).

    ``images`` is the image root (default: the annotation file's folder; for ``folder`` the
    annotations argument itself may be the folder). ``split`` sets the split where the source
    has none. Pass a :class:`LoadReport` to learn what was refused or skipped.

    ``captions_only`` skips the image root (see the module docstring); ``folder`` still
    needs its images, since they are what it lists. ``parsed_json`` is the annotations file's
    content when the caller has already parsed it (``karpathy``, ``coco``), so a large file
    is not read twice.
    """
    report = report if report is not None else LoadReport()
    fmt = format.lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if fmt == "folder":
        root = Path(images or annotations or "")
        return _folder(root, split, report)
    if annotations is None:
        raise UserError(f"format {fmt!r} needs an annotations file")
    ann = Path(annotations)
    if not ann.is_file():
        raise UserError(f"annotations file not found: {ann}")
    if captions_only:
        resolve: Resolve = _as_written
    else:
        root = Path(images) if images is not None else ann.parent
        if not root.is_dir():
            raise UserError(f"image folder not found: {root}")
        resolve = _Resolver(root, report)
    if fmt in ("karpathy", "coco"):
        data = read_json(ann, want=None) if parsed_json is None else parsed_json
        if fmt == "karpathy":
            return _karpathy(ann, data, resolve, report)
        return _coco(ann, data, resolve, split, report)
    if fmt == "flickr":
        if unlisted not in ("drop",) and normalize_split(unlisted) not in ("train", "val", "test"):
            raise UserError(f"unlisted must be 'train', 'val', 'test' or 'drop', not {unlisted!r}")
        return _flickr(ann, resolve, split, report, split_files, unlisted)
    columns = {
        "image": image_column,
        "caption": caption_column,
        "split": split_column,
        "id": id_column,
    }
    rows = _rows_csv(ann) if fmt == "csv" else _rows_jsonl(ann, report)
    return _table(rows, resolve, split, report, columns, ann)


# --------------------------------------------------------------------------- validation


@dataclass
class Verdict:
    """What opening an image file once found."""

    status: str  # "ok" | "missing" | "corrupt"
    reason: str = ""
    native: bool = True  # mlx-data decodes it faithfully (8-bit RGB JPEG/PNG, upright)
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def inspect_image(path: str) -> Verdict:
    """Open ``path`` with Pillow: structure check (``verify``), then a full decode."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            fmt = img.format
            mode = img.mode
            orientation = img.getexif().get(0x0112, 1)
            img.load()  # truncated data raises here
            w, h = img.size
    except FileNotFoundError:
        return Verdict("missing", "file not found")
    except IsADirectoryError:
        return Verdict("missing", "is a directory")
    except PermissionError as err:
        return Verdict("corrupt", f"unreadable: {err}")
    except Exception as err:  # Pillow raises many types for bad data; all mean "skip it"
        return Verdict("corrupt", f"{type(err).__name__}: {err}")
    if w < 1 or h < 1:
        return Verdict("corrupt", "empty image")
    native = fmt in ("JPEG", "PNG") and mode == "RGB" and orientation in (None, 1)
    return Verdict("ok", "", native, w, h)


class ImageValidator:
    """Checks image files once and remembers each verdict by (path, mtime, size).

    ``cache_file`` (optional JSON) keeps verdicts across processes. A changed file (new
    mtime or size) is checked again; a missing file is never cached.
    """

    def __init__(self, cache_file: str | Path | None = None, workers: int = 2) -> None:
        self.cache_file = Path(cache_file) if cache_file else None
        self.workers = max(1, workers)
        self._cache: dict[str, tuple[int, int, dict[str, Any]]] = {}
        if self.cache_file and self.cache_file.is_file():
            try:
                raw = json.loads(self.cache_file.read_text(encoding="utf-8"))
                self._cache = {k: (v[0], v[1], v[2]) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, KeyError):
                self._cache = {}  # a damaged cache only costs a re-check

    def _key(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self, path: str) -> Verdict:
        """The verdict for one file (cached)."""
        return self.check_many([path])[0]

    def check_many(self, paths: Sequence[str], progress: bool = False) -> list[Verdict]:
        """Verdicts for many files, new ones checked in a few threads."""
        out: list[Verdict | None] = [None] * len(paths)
        todo: list[tuple[int, str, tuple[int, int]]] = []
        for i, p in enumerate(paths):
            key = self._key(p)
            if key is None:
                out[i] = Verdict("missing", "file not found")
                continue
            hit = self._cache.get(p)
            if hit is not None and (hit[0], hit[1]) == key:
                out[i] = Verdict(**hit[2])
            else:
                todo.append((i, p, key))
        if todo:
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc="checking images", unit="img", leave=False)
            with ThreadPoolExecutor(self.workers) as pool:
                for (i, p, key), verdict in zip(
                    todo, pool.map(inspect_image, [t[1] for t in todo]), strict=True
                ):
                    out[i] = verdict
                    if verdict.status != "missing":
                        self._cache[p] = (key[0], key[1], asdict(verdict))
                    if bar is not None:
                        bar.update()
            if bar is not None:
                bar.close()
            self.save()
        return out  # type: ignore[return-value]

    def save(self) -> None:
        """Write the cache file (atomically), if one was given."""
        if not self.cache_file:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({k: list(v) for k, v in self._cache.items()}), encoding="utf-8")
        tmp.replace(self.cache_file)


_DEFAULT_VALIDATOR: ImageValidator | None = None


def default_validator() -> ImageValidator:
    """A process-wide in-memory validator, so later epochs do not reopen every file."""
    global _DEFAULT_VALIDATOR
    if _DEFAULT_VALIDATOR is None:
        _DEFAULT_VALIDATOR = ImageValidator()
    return _DEFAULT_VALIDATOR


@dataclass
class ValidationReport:
    """Which records are usable; the rest grouped by why not."""

    ok: list[int]  # indices into the records passed in
    missing: list[int]
    corrupt: list[int]
    verdicts: list[Verdict]

    def to_dict(self) -> dict[str, int]:
        return {"ok": len(self.ok), "missing": len(self.missing), "corrupt": len(self.corrupt)}


def validate_records(
    records: Sequence[Record], validator: ImageValidator | None = None, progress: bool = False
) -> ValidationReport:
    """Check every record's image once; see :class:`ImageValidator`."""
    validator = validator or default_validator()
    verdicts = validator.check_many([r.image for r in records], progress=progress)
    ok, missing, corrupt = [], [], []
    for i, v in enumerate(verdicts):
        (ok if v.ok else missing if v.status == "missing" else corrupt).append(i)
    return ValidationReport(ok, missing, corrupt, verdicts)


def splits_of(records: Iterable[Record]) -> list[str]:
    """Split names in a stable order: train, val, test, then the rest alphabetically."""
    names = {r.split for r in records}
    order = [s for s in ("train", "val", "test") if s in names]
    return order + sorted(names - set(order))
