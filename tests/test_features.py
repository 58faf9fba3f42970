"""Feature cache: hit, miss, invalidation, resume, values."""

import json
import os

import mlx.core as mx
import numpy as np
import pytest

from mlx_caption.data.features import FeatureCache
from mlx_caption.data.preprocess import PreprocessConfig, preprocess_paths
from mlx_caption.data.sources import Record, load_records
from mlx_caption.data.synthetic import write_synthetic_dataset
from mlx_caption.models.clip import CLIPVisionConfig as VisionConfig
from mlx_caption.models.clip import CLIPVisionModel as VisionTransformer

CFG = PreprocessConfig(resize_shortest_edge=32, crop_size=32)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("feat")
    return load_records("karpathy", write_synthetic_dataset(out, images=10, size=32), out)


def _encoder(seed: int = 0) -> VisionTransformer:
    mx.random.seed(seed)
    cfg = VisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    model = VisionTransformer(cfg)
    mx.eval(model.parameters())
    return model


class Counting:
    """encode_fn that counts images and can fail after some batches (a simulated crash)."""

    def __init__(self, encoder, fail_after: int | None = None):
        self.encoder, self.fail_after, self.images, self.calls = encoder, fail_after, 0, 0

    def __call__(self, px):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.images += px.shape[0]
        return self.encoder(px).last_hidden_state


def test_miss_then_hit_with_right_values(records, tmp_path):
    enc = _encoder()
    cache = FeatureCache(tmp_path / "cache")
    count = Counting(enc)
    store = cache.get_or_build(enc, records, CFG, 4, shard_size=4, encode_fn=count, progress=False)
    assert count.images == 10
    assert store.shape == (10, 5, 16) and len(store) == 10
    assert store.valid.all()
    want = np.asarray(
        enc(mx.array(preprocess_paths([r.image for r in records], CFG))).last_hidden_state
    )
    got = store.get([7, 0, 3])
    np.testing.assert_allclose(got, want[[7, 0, 3]], atol=1e-5)
    assert got.dtype == np.float32
    # Second run: same fingerprint, nothing encoded.
    again = Counting(enc)
    store2 = cache.get_or_build(enc, records, CFG, 4, shard_size=4, encode_fn=again, progress=False)
    assert again.images == 0 and store2.fingerprint == store.fingerprint
    np.testing.assert_array_equal(store2.get(range(10)), store.get(range(10)))
    with pytest.raises(IndexError):
        store.get([10])


def test_invalidation(records, tmp_path):
    enc = _encoder()
    cache = FeatureCache(tmp_path / "cache")
    base = cache.get_or_build(enc, records, CFG, 8, progress=False).fingerprint

    def rebuilt(**kw) -> bool:
        count = Counting(kw.pop("encoder", enc))
        cache.get_or_build(
            count.encoder,
            kw.pop("records", records),
            kw.pop("cfg", CFG),
            8,
            encode_fn=count,
            progress=False,
            **kw,
        )
        return count.images > 0

    assert not rebuilt()
    assert rebuilt(cfg=PreprocessConfig(resize_shortest_edge=32, crop_size=32, resample="bilinear"))
    assert rebuilt(encoder=_encoder(seed=1))  # other weights
    assert rebuilt(records=list(reversed(records)))  # order matters: rows follow records
    assert rebuilt(dtype="float16")
    # Touching an image (new mtime) invalidates.
    st = os.stat(records[0].image)
    os.utime(records[0].image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert rebuilt()
    assert not rebuilt()
    assert len(list((tmp_path / "cache").iterdir())) == 6
    assert base != FeatureCache(tmp_path / "cache").fingerprint(
        enc, [r.image for r in records], CFG
    )


def test_resume_after_interruption(records, tmp_path):
    enc = _encoder()
    cache = FeatureCache(tmp_path / "cache")
    crash = Counting(enc, fail_after=2)  # batch 4, shard 4: dies in the third shard
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build(enc, records, CFG, 4, shard_size=4, encode_fn=crash, progress=False)
    folder = next((tmp_path / "cache").iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False and sorted(manifest["shards"]) == ["0", "1"]
    assert not list(folder.glob("*.tmp"))
    resume = Counting(enc)
    store = cache.get_or_build(enc, records, CFG, 4, shard_size=4, encode_fn=resume, progress=False)
    assert resume.images == 2  # only the last shard (images 8, 9)
    fresh = FeatureCache(tmp_path / "fresh").get_or_build(enc, records, CFG, 4, progress=False)
    np.testing.assert_allclose(store.get(range(10)), fresh.get(range(10)), atol=1e-6)


def test_float16_and_bad_images(records, tmp_path):
    enc = _encoder()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    recs = [*records[:3], Record(str(bad), ["x"], "train", "bad")]
    store = FeatureCache(tmp_path / "c").get_or_build(
        enc, recs, CFG, 2, dtype="float16", progress=False
    )
    assert store.dtype == "float16"
    assert store.valid.tolist() == [True, True, True, False]
    assert not store.get([3]).any()
    full = FeatureCache(tmp_path / "d").get_or_build(enc, recs[:3], CFG, 2, progress=False)
    np.testing.assert_allclose(store.get([0, 1, 2]), full.get([0, 1, 2]), atol=2e-2)
