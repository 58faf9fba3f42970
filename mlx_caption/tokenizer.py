"""Caption tokenizer: Hugging Face ``tokenizers`` with fixed special ids.

Every tokenizer this project uses, trained here or loaded from elsewhere, has
``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2 and ``<unk>`` = 3, so a decoder, a checkpoint
and a data pipeline can rely on those numbers without asking the tokenizer.

Caption normalization (lowercase, collapse whitespace, drop a trailing period) lives in the
tokenizer's own normalizer pipeline, so it is saved in ``tokenizer.json`` and applied the same
way wherever the file is loaded (Python, Rust, another program).

A foreign ``tokenizer.json`` (GPT-2's BPE, a WordPiece, a Unigram, a WordLevel) is adopted by
rebuilding its vocabulary with our four specials at 0-3 and every other token shifted up in
its original order; the base's own unknown token becomes ``<unk>``. The result is one ordinary
``tokenizer.json``: no side table of id maps to keep in sync.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from mlx_caption import tokens
from mlx_caption.errors import UserError
from mlx_caption.files import read_json

SPECIAL_TOKENS = tokens.SPECIAL_TOKEN_NAMES
TOKENIZER_FILE = "tokenizer.json"
# ByteLevel maps each of the 256 bytes to one visible character; training must keep all of
# them so any text (emoji, CJK) encodes without <unk>.
_MIN_BPE_VOCAB = len(SPECIAL_TOKENS) + 256


def caption_normalizer() -> normalizers.Normalizer:
    """The caption normalization pipeline stored in every tokenizer.json we write."""
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            # Flickr captions end with " ." and COCO's with "."; a caption is not a sentence.
            normalizers.Replace(Regex(r"[\s.]*\.[\s]*$"), ""),
            normalizers.Strip(),
        ]
    )


class CaptionTokenizer:
    """A ``tokenizers.Tokenizer`` whose special ids are fixed (see module docstring)."""

    PAD = tokens.PAD
    START = tokens.START
    END = tokens.END
    UNK = tokens.UNK

    def __init__(self, tokenizer: Tokenizer) -> None:
        for i, name in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(name) != i:
                raise UserError(
                    f"tokenizer has {name!r} at id {tokenizer.token_to_id(name)}, expected {i}; "
                    "load it with CaptionTokenizer.from_file() to remap"
                )
        self.tokenizer = tokenizer
        # Post-processors of foreign tokenizers would add [CLS]/<s>; we add our own specials.
        self.tokenizer.post_processor = None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    # ----------------------------------------------------------------- construction

    @classmethod
    def train(
        cls, captions: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2
    ) -> CaptionTokenizer:
        """Train a byte-level BPE on captions.

        ``vocab_size`` is an upper bound: a small corpus runs out of merges sooner and gets a
        smaller vocabulary. It must leave room for the 256 byte symbols plus the 4 specials.
        """
        if vocab_size < _MIN_BPE_VOCAB:
            raise UserError(
                f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least "
                f"{_MIN_BPE_VOCAB} (256 bytes + 4 special tokens)"
            )
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = caption_normalizer()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=max(1, min_frequency),
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # Normalize first: the trainer does not run the normalizer on the iterator's text.
        norm = tok.normalizer
        tok.train_from_iterator((norm.normalize_str(c) for c in captions), trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path, normalize: bool = True) -> CaptionTokenizer:
        """Load a tokenizer.json (a file or a folder holding one).

        A file that already has our specials at 0-3 loads unchanged. Any other is adopted:
        vocabulary rebuilt with the specials first and, when ``normalize``, the caption
        normalizer put in front of its own.
        """
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise UserError(f"tokenizer file not found: {path}")
        data = read_json(path, want=None)
        if not isinstance(data, dict) or "model" not in data:
            raise UserError(f"{path} is not a Hugging Face tokenizer.json")
        if _has_fixed_specials(data):
            return cls(_tokenizer_from_dict(data, path))
        return cls(_tokenizer_from_dict(_adopt(data, normalize, path), path))

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, normalize: bool = True) -> CaptionTokenizer:
        """Load from a local path or a Hugging Face hub id (e.g. ``gpt2``)."""
        p = Path(id_or_path)
        if p.exists():
            return cls.from_file(p, normalize=normalize)
        try:
            from huggingface_hub import hf_hub_download

            local = hf_hub_download(str(id_or_path), TOKENIZER_FILE)
        except Exception as err:  # network, missing repo, missing file: all the user's to fix
            raise UserError(
                f"cannot get tokenizer.json for {id_or_path!r} (not a local path; hub: {err})"
            ) from err
        return cls.from_file(local, normalize=normalize)

    def save(self, path: str | Path) -> Path:
        """Write one tokenizer.json (``path`` may be a folder). Returns the file written."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / TOKENIZER_FILE
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        self.tokenizer.save(str(tmp))
        tmp.replace(path)
        return path

    # ----------------------------------------------------------------- use

    @property
    def vocab_size(self) -> int:
        """Number of ids (the decoder's embedding rows)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def normalize(self, text: str) -> str:
        """Caption normalization as stored in the tokenizer (what decode gives back)."""
        norm = self.tokenizer.normalizer
        return norm.normalize_str(text) if norm is not None else text

    def _body(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encs]

    def encode(self, text: str) -> list[int]:
        """Token ids of one caption, ``<start>`` ... ``<end>``, no padding."""
        return [self.START, *self.encode_text(text), self.END]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text`` alone (no ``<start>``/``<end>``): a prompt's ids."""
        return self._body([text])[0]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """Encode captions to a (N, max_length) int32 array.

        Each row is ``<start> ids... <end>`` then :data:`~mlx_caption.tokens.NO_TOKEN`
        padding (the loss skips it); a caption too long is cut so that ``<end>`` is still the
        last real token (the model always learns to stop).
        """
        if max_length < 2:
            raise UserError(f"max_length must be at least 2 (<start> and <end>), got {max_length}")
        out = np.full((len(texts), max_length), tokens.NO_TOKEN, dtype=np.int32)
        for row, ids in enumerate(self._body(texts)):
            ids = [self.START, *ids[: max_length - 2], self.END]
            out[row, : len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a token sequence: stops at the first ``<end>``, drops specials."""
        body: list[int] = []
        for i in ids:
            i = int(i)
            if i == self.END:
                break
            if i > self.UNK:
                body.append(i)
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        # ByteLevel with a prefix space decodes " a dog"; WordLevel joins with spaces.
        return " ".join(text.split())

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """:meth:`decode` for each sequence."""
        return [self.decode(ids) for ids in batch]

    def __repr__(self) -> str:
        model = type(self.tokenizer.model).__name__
        return f"CaptionTokenizer({model}, vocab_size={self.vocab_size})"


# --------------------------------------------------------------------- adopting foreign files


def _tokenizer_from_dict(data: dict, path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_str(json.dumps(data))
    except Exception as err:
        raise UserError(f"cannot load tokenizer {path}: {err}") from err


def _has_fixed_specials(data: dict) -> bool:
    added = {t.get("content"): t.get("id") for t in data.get("added_tokens") or []}
    return all(added.get(name) == i for i, name in enumerate(SPECIAL_TOKENS))


def _model_tokens(model: dict, path: Path) -> list[str]:
    """The model's vocabulary as a list indexed by id."""
    kind = model.get("type")
    if kind in ("BPE", "WordLevel", "WordPiece"):
        vocab = model["vocab"]
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise UserError(f"{path}: vocabulary ids are not 0..N-1; cannot remap")
        return [t for t, _ in ordered]
    if kind == "Unigram":
        return [piece for piece, _ in model["vocab"]]
    raise UserError(f"{path}: unsupported tokenizer model type {kind!r}")


def _adopt(data: dict, normalize: bool, path: Path) -> dict:
    """Rebuild a foreign tokenizer.json with <pad> <start> <end> <unk> at ids 0-3."""
    data = json.loads(json.dumps(data))  # deep copy
    model = data["model"]
    kind = model.get("type")
    tokens = _model_tokens(model, path)
    base_unk = None
    if kind == "Unigram":
        if model.get("unk_id") is not None:
            base_unk = tokens[model["unk_id"]]
    else:
        base_unk = model.get("unk_token")
    # Tokens that fold into one of ours: our own names, and the base's unknown token.
    fold = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    if base_unk is not None:
        fold[base_unk] = CaptionTokenizer.UNK

    new_tokens = [t for t in tokens if t not in fold]
    new_ids = {t: i + len(SPECIAL_TOKENS) for i, t in enumerate(new_tokens)}
    in_model = set(tokens)
    extra = sorted(
        (t for t in data.get("added_tokens") or [] if t["content"] not in in_model),
        key=lambda t: t["id"],
    )
    next_id = len(SPECIAL_TOKENS) + len(new_tokens)
    for t in extra:
        if t["content"] not in fold and t["content"] not in new_ids:
            new_ids[t["content"]] = next_id
            next_id += 1

    if kind == "Unigram":
        scores = {piece: score for piece, score in model["vocab"]}
        model["vocab"] = [[name, 0.0] for name in SPECIAL_TOKENS] + [
            [t, scores[t]] for t in new_tokens
        ]
        model["unk_id"] = CaptionTokenizer.UNK
    else:
        vocab = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
        vocab.update({t: new_ids[t] for t in new_tokens})
        model["vocab"] = vocab
        if kind == "WordPiece" or base_unk is not None:
            model["unk_token"] = "<unk>"

    added = [
        {
            "id": i,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, name in enumerate(SPECIAL_TOKENS)
    ]
    for t in data.get("added_tokens") or []:
        if t["content"] in fold:
            continue
        t = dict(t)
        t["id"] = new_ids[t["content"]]
        added.append(t)
    data["added_tokens"] = sorted(added, key=lambda t: t["id"])
    data["post_processor"] = None
    data["truncation"] = None
    data["padding"] = None
    if normalize:
        tmp = Tokenizer(models.BPE())
        tmp.normalizer = caption_normalizer()
        ours = json.loads(tmp.to_str())["normalizer"]
        base = data.get("normalizer")
        steps = ours["normalizers"] + ([base] if base else [])
        data["normalizer"] = {"type": "Sequence", "normalizers": steps}
    return data
