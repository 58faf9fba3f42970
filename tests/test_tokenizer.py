"""CaptionTokenizer: fixed special ids, normalization, round trips, foreign files."""

from pathlib import Path

import numpy as np
import pytest
from prerequisites import in_ci, missing
from shared_data import FLICKR8K_CAPTIONS as FLICKR
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from mlx_caption.errors import UserError
from mlx_caption.tokenizer import CaptionTokenizer
from mlx_caption.tokens import NO_TOKEN


def _flickr_captions(n: int = 3000) -> list[str]:
    if FLICKR.exists():
        lines = FLICKR.read_text(encoding="utf-8").splitlines()[:n]
        return [line.split("\t", 1)[1] for line in lines]
    # Fallback so the suite also runs where the shared data is absent; CI must have it.
    if in_ci():
        missing(f"{FLICKR} (the shared Flickr8k captions)")
    base = ["A dog runs on the grass .", "Two children play in a park .", "A man rides a bike ."]
    return base * (n // len(base))


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return _flickr_captions()


@pytest.fixture(scope="module")
def tok(captions) -> CaptionTokenizer:
    return CaptionTokenizer.train(captions, vocab_size=1000)


def test_special_ids_fixed(tok):
    assert (tok.PAD, tok.START, tok.END, tok.UNK) == (0, 1, 2, 3)
    for i, name in enumerate(["<pad>", "<start>", "<end>", "<unk>"]):
        assert tok.tokenizer.token_to_id(name) == i
    assert 300 < tok.vocab_size <= 1000


def test_normalize():
    tok = CaptionTokenizer.train(["a dog"], vocab_size=300)
    assert tok.normalize("  A  Child\tin a PINK dress .  ") == "a child in a pink dress"
    assert tok.normalize("A dog.") == "a dog"
    assert tok.normalize("St. Louis at night ...") == "st. louis at night"
    assert tok.normalize("") == ""


def test_round_trip_real_captions(tok, captions):
    for text in captions[:300]:
        ids = tok.encode(text)
        assert ids[0] == tok.START and ids[-1] == tok.END
        assert tok.UNK not in ids
        assert tok.decode(ids) == tok.normalize(text)


def test_unknown_characters_round_trip(tok):
    # Byte-level BPE: characters never seen in training still round-trip, without <unk>.
    for text in ["A dog 🐶 on the beach", "一只狗在草地上奔跑", "café naïve ß"]:
        ids = tok.encode(text)
        assert tok.UNK not in ids
        assert tok.decode(ids) == tok.normalize(text)


def test_empty_caption(tok):
    assert tok.encode("") == [1, 2]
    batch = tok.encode_batch([""], max_length=5)
    assert batch.tolist() == [[1, 2, NO_TOKEN, NO_TOKEN, NO_TOKEN]]
    assert tok.decode([1, 2, 0, 0]) == ""


def test_encode_batch_pads_and_truncates(tok):
    long = " ".join(["dog"] * 500)
    batch = tok.encode_batch(["a dog", long], max_length=12)
    assert batch.dtype == np.int32 and batch.shape == (2, 12)
    short = tok.encode("a dog")
    assert batch[0, : len(short)].tolist() == short
    assert (batch[0, len(short) :] == NO_TOKEN).all()  # padding: no token id at all
    # Truncated: <start> first, <end> kept as the last token, no padding.
    assert batch[1, 0] == tok.START and batch[1, -1] == tok.END
    assert (batch[1] != NO_TOKEN).all()
    assert tok.decode(batch[1]).split() == ["dog"] * 10
    with pytest.raises(UserError):
        tok.encode_batch(["x"], max_length=1)


def test_decode_stops_at_end_and_drops_specials(tok):
    ids = tok.encode("a dog runs")
    noisy = [tok.START, tok.PAD, *ids[1:-1], tok.UNK, tok.END, *ids[1:-1]]
    assert tok.decode(noisy) == "a dog runs"
    assert tok.decode_batch([ids, ids]) == ["a dog runs"] * 2


def test_tiny_corpus_and_vocab_floor():
    tok = CaptionTokenizer.train(["a red circle", "a blue square"], vocab_size=8192)
    assert tok.vocab_size < 400  # runs out of merges; no error
    assert tok.decode(tok.encode("A red square.")) == "a red square"
    with pytest.raises(UserError, match="too small"):
        CaptionTokenizer.train(["x"], vocab_size=100)


def test_save_load_ids_fixed(tok, tmp_path, captions):
    path = tok.save(tmp_path / "ckpt")
    assert path.name == "tokenizer.json"
    loaded = CaptionTokenizer.from_file(tmp_path / "ckpt")
    assert loaded.vocab_size == tok.vocab_size
    texts = captions[:50]
    assert (loaded.encode_batch(texts, 20) == tok.encode_batch(texts, 20)).all()
    # The normalizer travels in the file.
    assert loaded.normalize("  A DOG . ") == "a dog"
    again = CaptionTokenizer.from_pretrained(path)
    assert again.encode("a dog") == tok.encode("a dog")


def _foreign_wordlevel(path: Path, captions: list[str]) -> Tokenizer:
    t = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    t.train_from_iterator(captions, trainer)
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    t.save(str(path))
    return t


def test_foreign_wordlevel_remapped(tmp_path, captions):
    base = _foreign_wordlevel(tmp_path / "wl.json", captions)
    tok = CaptionTokenizer.from_file(tmp_path / "wl.json")
    assert tok.tokenizer.token_to_id("<pad>") == 0 and tok.tokenizer.token_to_id("<unk>") == 3
    # Base tokens keep their order, shifted past our specials; [UNK] folds into <unk>.
    assert tok.tokenizer.token_to_id("dog") == base.token_to_id("dog") + 3
    assert tok.tokenizer.token_to_id("[UNK]") is None
    ids = tok.encode("A DOG runs zzqx .")
    assert ids[0] == 1 and ids[-1] == 2 and ids[-2] == tok.UNK  # no [CLS]/[SEP] from base
    assert tok.decode(ids) == "a dog runs"
    tok.save(tmp_path / "saved.json")
    loaded = CaptionTokenizer.from_file(tmp_path / "saved.json")
    assert loaded.encode("a dog runs") == tok.encode("a dog runs")
    assert loaded.vocab_size == tok.vocab_size == base.get_vocab_size() + 3


def test_foreign_bytelevel_bpe_remapped(tmp_path, captions):
    # A GPT-2-style tokenizer made here (no downloads): byte-level BPE, <|endoftext|> special.
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    t.train_from_iterator(captions, trainer)
    t.save(str(tmp_path / "gpt.json"))
    tok = CaptionTokenizer.from_pretrained(tmp_path / "gpt.json")
    assert [tok.tokenizer.token_to_id(s) for s in ["<pad>", "<start>", "<end>", "<unk>"]] == [
        0,
        1,
        2,
        3,
    ]
    assert tok.tokenizer.token_to_id("<|endoftext|>") == 4
    assert tok.encode("a dog")[1:-1] == [i + 4 for i in t.encode("a dog").ids]
    text = "Two dogs 🐶 play in the 雪."
    assert tok.decode(tok.encode(text)) == tok.normalize(text) == "two dogs 🐶 play in the 雪"
    tok.save(tmp_path / "out")
    assert CaptionTokenizer.from_file(tmp_path / "out").encode(text) == tok.encode(text)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        CaptionTokenizer.from_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError):
        CaptionTokenizer.from_file(tmp_path / "bad.json")
