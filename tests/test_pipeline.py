"""Training and evaluation streams: shapes, ids, order, resume, bad files."""

import numpy as np
import pytest
from PIL import Image

from mlx_caption.data.pipeline import eval_stream, train_stream
from mlx_caption.data.preprocess import PreprocessConfig, preprocess_paths
from mlx_caption.data.sources import ImageValidator, Record, load_records
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.errors import UserError
from mlx_caption.tokenizer import CaptionTokenizer

CFG = PreprocessConfig(resize_shortest_edge=32, crop_size=32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe")
    path = write_synthetic_dataset(out, images=40, seed=5, size=32)
    records = load_records("karpathy", path, out)
    tok = CaptionTokenizer.train([c for r in records for c in r.captions], vocab_size=400)
    return records, tok


def _epoch(records, tok, **kw):
    return list(train_stream(records, tok, CFG, 8, 48, **kw))


def test_epoch_shapes_and_ids(data):
    records, tok = data
    stream = train_stream(records, tok, CFG, 8, 48, seed=1, epoch=0)
    assert len(stream) == stream.batches_per_epoch == 5
    batches = list(stream)
    assert len(batches) == 5
    for b in batches:
        assert b["pixels"].shape == (8, 32, 32, 3) and b["pixels"].dtype == np.float32
        assert b["tokens"].shape == (8, 48) and b["tokens"].dtype == np.int32
        assert b["index"].shape == (8,)
        assert (b["tokens"][:, 0] == tok.START).all()
        for row, i in zip(b["tokens"], b["index"], strict=True):
            # The caption belongs to the image it is paired with.
            assert tok.decode(row) in {tok.normalize(c) for c in records[i].captions}
    seen = np.concatenate([b["index"] for b in batches])
    assert sorted(seen.tolist()) == list(range(40))  # each image once, shuffled
    assert seen.tolist() != list(range(40))


def test_pixels_match_images(data):
    records, tok = data
    b = _epoch(records, tok, seed=2)[0]
    # 32 px in, 32 px out: the fast path does no resampling, so it equals the exact path.
    exact = preprocess_paths([records[i].image for i in b["index"]], CFG)
    np.testing.assert_allclose(b["pixels"], exact, atol=1e-5)


def test_exact_resize_mode_squashes_the_whole_image(data):
    records, tok = data
    squash = PreprocessConfig(crop_size=16, resize_mode="exact", do_center_crop=False,
                              resample="bilinear")  # fmt: skip
    b = next(iter(train_stream(records, tok, squash, 8, 48, seed=2)))
    assert b["pixels"].shape == (8, 16, 16, 3)
    # mlx-data's bilinear against Pillow's (the exact path): the whole picture, halved, and
    # resampled slightly differently.
    exact = preprocess_paths([records[i].image for i in b["index"]], squash)
    assert np.abs(b["pixels"] - exact).mean() < 0.1
    assert np.corrcoef(b["pixels"].ravel(), exact.ravel())[0, 1] > 0.95


def test_deterministic_and_resumable(data):
    records, tok = data
    full = _epoch(records, tok, seed=3, epoch=2)
    again = _epoch(records, tok, seed=3, epoch=2)
    resumed = _epoch(records, tok, seed=3, epoch=2, start_batch=3)
    assert len(resumed) == 2
    for a, b in zip(full, again, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    for a, b in zip(full[3:], resumed, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    other = _epoch(records, tok, seed=3, epoch=3)
    assert not np.array_equal(full[0]["index"], other[0]["index"])
    assert _epoch(records, tok, seed=3, epoch=2, start_batch=9) == []


def test_captions_per_image_and_all(data):
    records, tok = data
    b = _epoch(records, tok, captions_per_image=3)[0]
    assert b["pixels"].shape[0] == 8 and b["tokens"].shape == (24, 48)
    for n, i in enumerate(b["index"]):
        rows = b["tokens"][3 * n : 3 * n + 3]
        texts = {tok.decode(r) for r in rows}
        assert len(texts) == 3  # three different captions of the same image
        assert texts <= {tok.normalize(c) for c in records[i].captions}
    every = list(train_stream(records, tok, CFG, 8, 48, captions="all", pixels=False))
    assert len(every) == 200 // 8
    assert "pixels" not in every[0]
    counts = np.bincount(np.concatenate([b["index"] for b in every]), minlength=40)
    assert counts.sum() == 200 and counts.max() == 5
    with pytest.raises(UserError):
        train_stream(records, tok, CFG, 8, 48, captions="all", captions_per_image=2)
    with pytest.raises(UserError, match="no full batch"):
        train_stream(records[:4], tok, CFG, 8, 48)


def test_augment_is_seeded_and_no_flip_by_default(data):
    records, tok = data
    a = _epoch(records, tok, seed=4, augment=True)
    b = _epoch(records, tok, seed=4, augment=True)
    plain = _epoch(records, tok, seed=4)
    assert np.array_equal(a[0]["pixels"], b[0]["pixels"])
    assert a[0]["pixels"].shape == plain[0]["pixels"].shape
    assert not np.array_equal(a[0]["pixels"], plain[0]["pixels"])


def test_bad_and_odd_files_never_stop_an_epoch(data, tmp_path):
    records, tok = data
    recs = list(records[:14])
    corrupt = tmp_path / "corrupt.jpg"
    with open(recs[0].image, "rb") as f:
        corrupt.write_bytes(f.read()[:300])  # header only: mlx-data would raise mid-epoch
    gray = tmp_path / "gray.png"
    Image.new("L", (40, 32), 128).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(rgba)  # fully transparent red
    extra = [
        Record(str(corrupt), ["a broken image"], "train", "c"),
        Record(str(tmp_path / "missing.jpg"), ["gone"], "train", "m"),
        Record(str(gray), ["a grey image"], "train", "g"),
        Record(str(rgba), ["a clear image"], "train", "r"),
    ]
    recs += extra
    stream = train_stream(
        recs, tok, CFG, 4, 48, validator=ImageValidator(), convert_dir=tmp_path / "conv"
    )
    assert stream.dropped == {"missing": 1, "corrupt": 1}
    batches = list(stream)
    assert len(batches) == 4  # 16 usable images
    pixels = np.concatenate([b["pixels"] for b in batches])
    index = np.concatenate([b["index"] for b in batches])
    assert 14 not in index and 15 not in index
    mean = np.asarray(CFG.image_mean, dtype=np.float32)
    std = np.asarray(CFG.image_std, dtype=np.float32)
    grey = pixels[list(index).index(16)]
    np.testing.assert_allclose(
        grey, np.broadcast_to((128 / 255 - mean) / std, grey.shape), atol=0.02
    )
    white = pixels[list(index).index(17)]  # alpha composited on white, not "red"
    np.testing.assert_allclose(white, np.broadcast_to((1.0 - mean) / std, white.shape), atol=0.02)


def test_eval_stream_ordered_exact(data):
    records, _ = data
    val = [r for r in records if r.split != "train"] + [
        Record("/nonexistent/x.jpg", ["gone"], "val", "x")
    ]
    stream = eval_stream(val, CFG, 3)
    assert stream.dropped == {"missing": 1, "corrupt": 0}
    batches = list(stream)
    assert len(batches) == len(stream) == 3
    assert [b["pixels"].shape[0] for b in batches] == [3, 3, 2]
    ids = [i for b in batches for i in b["ids"]]
    assert ids == [r.id for r in val[:-1]]
    refs = [r for b in batches for r in b["references"]]
    assert refs[0] == val[0].captions and len(refs[0]) == 5
    exact = preprocess_paths([r.image for r in val[:3]], CFG)
    assert np.array_equal(batches[0]["pixels"], exact)
