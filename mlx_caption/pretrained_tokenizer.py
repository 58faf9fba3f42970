"""A pretrained captioner's own tokenizer, through the ``tokenizers`` library.

Pretrained captioners keep their tokenizer's ids (BLIP's BERT WordPiece, GPT-2's byte-level
BPE): :class:`PretrainedTokenizer` reads a checkpoint's ``tokenizer.json``, or builds the same
tokenizer from the vocabulary files (``vocab.txt``; ``vocab.json`` and ``merges.txt``) the way
transformers does, and gives transformers' ids and decoded text. Which ids start and end a
caption is the model's to say (its decoder's :class:`~mlx_caption.tokens.SpecialTokens`).

It offers what the generation engine and the trainer ask of a tokenizer: ``decode``,
``encode_text`` (a prompt), ``encode_batch`` (training rows) and ``save``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from mlx_caption.errors import UserError
from mlx_caption.files import read_json
from mlx_caption.tokenizer import TOKENIZER_FILE, caption_normalizer
from mlx_caption.tokens import NO_TOKEN, SpecialTokens

# What a checkpoint may carry besides tokenizer.json (the hub files conversion downloads).
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
_SPECIAL_NAMES = (
    "unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token",
)  # fmt: skip


class PretrainedTokenizer:
    """A ``tokenizers.Tokenizer`` with the model's special tokens.

    Args:
        tokenizer: the tokenizer (its post-processor, truncation and padding are turned off:
            the engine and the trainer place the special tokens themselves).
        special: the model's start, end and pad ids.
    """

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens):
        self.tokenizer = tokenizer
        self.special = special
        self.tokenizer.post_processor = None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._captions = caption_normalizer()

    @classmethod
    def from_folder(cls, folder: str | Path, special: SpecialTokens) -> PretrainedTokenizer:
        """The tokenizer of a checkpoint folder: its ``tokenizer.json``, else its vocabulary
        files with ``tokenizer_config.json``; a :class:`UserError` when it has neither."""
        folder = Path(folder)
        if (folder / TOKENIZER_FILE).is_file():
            try:
                tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
            except Exception as err:  # the tokenizers library raises plain Exceptions
                raise UserError(f"cannot read {folder / TOKENIZER_FILE}: {err}") from None
        elif (folder / "vocab.txt").is_file():
            tokenizer = _wordpiece(folder)
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tokenizer = _byte_level_bpe(folder)
        else:
            raise UserError(
                f"{folder} has no tokenizer: expected tokenizer.json, vocab.txt, or vocab.json "
                "with merges.txt"
            )
        return cls(tokenizer, special)

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (``path`` is a folder or the file). Returns the file."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / TOKENIZER_FILE
        self.tokenizer.save(str(path))
        return path

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer knows, added tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` alone (no start or end token): a prompt's ids."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """Training rows ``(N, max_length)`` int32: start ids, the caption, the end id, then
        :data:`~mlx_caption.tokens.NO_TOKEN`. A caption too long is cut so that the end id
        is still its last token.

        Captions are normalised as our own tokenizer's are (lowercase, whitespace collapsed,
        no trailing period: a caption is not a sentence) before tokenizing.
        """
        start, end = list(self.special.start), self.special.end
        if max_length < len(start) + 1:
            raise UserError(f"max_length must be at least {len(start) + 1}, got {max_length}")
        texts = [self._captions.normalize_str(t) for t in texts]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        out = np.full((len(texts), max_length), NO_TOKEN, dtype=np.int32)
        room = max_length - len(start) - 1
        for row, enc in enumerate(encoded):
            ids = [*start, *enc.ids[:room], end]
            out[row, : len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of generated ids as transformers decodes it (special tokens skipped), up to
        the first end token."""
        body: list[int] = []
        for i in ids:
            i = int(i)
            if i == self.special.end:
                break
            body.append(i)
        return self.tokenizer.decode(body, skip_special_tokens=True).strip()

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """:meth:`decode` for each sequence."""
        return [self.decode(ids) for ids in batch]

    def __repr__(self) -> str:
        model = type(self.tokenizer.model).__name__
        return f"PretrainedTokenizer({model}, vocab_size={self.vocab_size})"


# --------------------------------------------------------------------- from vocabulary files


def _config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return read_json(path) if path.is_file() else {}


def _name(token: object) -> str | None:
    # tokenizer_config.json stores a special token as a string or as an AddedToken dict.
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


def _added_tokens(folder: Path, config: dict) -> list[tuple[int | None, str]]:
    """Tokens added on top of the vocabulary file: ``(id or None, content)`` in id order."""
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict) and decoder:
        return sorted((int(i), _name(t)) for i, t in decoder.items() if _name(t))
    added = folder / "added_tokens.json"
    if added.is_file():
        return sorted((int(i), t) for t, i in read_json(added).items())
    special_map = folder / "special_tokens_map.json"
    names = {**(read_json(special_map) if special_map.is_file() else {}), **config}
    tokens = [_name(names.get(key)) for key in _SPECIAL_NAMES]
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = names.get(key) or []
        tokens += [_name(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
    return [(None, t) for t in tokens if t]


def _add_tokens(tokenizer: Tokenizer, added: list[tuple[int | None, str]], folder: Path) -> None:
    """Add tokens not in the vocabulary after it, as transformers does; a listed id must be
    the one they get, or the file does not describe this vocabulary."""
    for token_id, content in added:
        current = tokenizer.token_to_id(content)
        if current is None:
            tokenizer.add_special_tokens([content])
            current = tokenizer.token_to_id(content)
        else:
            tokenizer.add_special_tokens([content])  # marks it special (skipped when decoding)
        if token_id is not None and current != token_id:
            raise UserError(
                f"{folder}: added token {content!r} has id {token_id} in the tokenizer files "
                f"but {current} after the vocabulary"
            )


def _wordpiece(folder: Path) -> Tokenizer:
    """BERT's tokenizer from ``vocab.txt``, built as transformers' ``BertTokenizer`` is."""
    config = _config(folder)
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(lines)}
    unk = _name(config.get("unk_token")) or "[UNK]"
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    _add_tokens(tokenizer, _added_tokens(folder, config), folder)
    return tokenizer


def _byte_level_bpe(folder: Path) -> Tokenizer:
    """GPT-2's byte-level BPE from ``vocab.json`` and ``merges.txt``."""
    config = _config(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    prefix_space = bool(config.get("add_prefix_space", False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    _add_tokens(tokenizer, _added_tokens(folder, config), folder)
    return tokenizer
