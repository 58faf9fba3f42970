"""PretrainedTokenizer: a pretrained captioner's own tokenizer, against transformers', for
GPT-2's byte-level BPE built from vocab.json and merges.txt (BERT's WordPiece is tested with
the captioner families in test_captioner_families.py), and the training rows it makes."""

import numpy as np
import pytest
from prerequisites import require_module
from tokenizers import ByteLevelBPETokenizer

from mlx_caption.pretrained_tokenizer import PretrainedTokenizer
from mlx_caption.tokens import NO_TOKEN, SpecialTokens

CORPUS = ["a dog runs on the grass", "two cats sitting on a red car", "a man riding a horse"]
EOS = 0  # GPT-2's <|endoftext|>: start, end and pad at once
GPT2 = SpecialTokens(start=(EOS,), end=EOS, pad=EOS)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 20, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    bpe.save_model(str(folder))
    return folder


def test_byte_level_bpe_from_vocab_files_matches_transformers(gpt2_folder, tmp_path):
    transformers = require_module("transformers", "the [torch] extra")
    theirs = transformers.GPT2Tokenizer.from_pretrained(gpt2_folder)
    ours = PretrainedTokenizer.from_folder(gpt2_folder, GPT2)
    assert ours.vocab_size == len(theirs) == 300
    for text in ["a dog runs", "two Cats!", "héllo wörld 🐶", "a horse\non grass", ""]:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode_text(text) == ids
        # transformers keeps a byte-level leading space; a caption is stripped.
        assert ours.decode([*ids, EOS, EOS]) == theirs.decode(ids).strip()
    # Saved as one tokenizer.json, it reads back the same.
    ours.save(tmp_path)
    again = PretrainedTokenizer.from_folder(tmp_path, GPT2)
    assert again.encode_text("two cats riding") == ours.encode_text("two cats riding")


def test_training_rows_end_with_the_end_token_and_pad_with_no_token(gpt2_folder):
    tok = PretrainedTokenizer.from_folder(gpt2_folder, GPT2)
    rows = tok.encode_batch(["A dog runs.", "a " * 50], max_length=10)
    assert rows.dtype == np.int32 and rows.shape == (2, 10)
    body = tok.encode_text("a dog runs")  # normalised: lowercase, no final period
    assert rows[0, : len(body) + 2].tolist() == [EOS, *body, EOS]
    assert (rows[0, len(body) + 2 :] == NO_TOKEN).all()
    # The end token equals the pad id here: only NO_TOKEN marks padding.
    assert rows[1, 0] == EOS and rows[1, -1] == EOS and (rows[1] != NO_TOKEN).all()
    assert tok.decode(rows[0, 1:]) == "a dog runs"
