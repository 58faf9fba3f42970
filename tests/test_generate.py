"""Generation: greedy, beam search (checked against exhaustive enumeration), sampling,
constraints, batching, scores and attention maps, on tiny random decoders."""

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)

# isort: split
import itertools

import mlx.core as mx
import numpy as np
import pytest

from mlx_caption.errors import UserError
from mlx_caption.generate import DecodingConfig, decode
from mlx_caption.generate.logits import ngram_bans as _ngram_bans
from mlx_caption.generate.logits import repetition_penalty as _apply_repetition_penalty
from mlx_caption.generate.logits import top_k as _filter_top_k
from mlx_caption.generate.logits import top_p as _filter_top_p
from mlx_caption.models.decoder import DecoderConfig, TextDecoder
from mlx_caption.tokens import END, START


class StubTokenizer:
    """Decodes ids to 'w<id>' words, dropping the specials (like CaptionTokenizer.decode)."""

    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids if i > 3)


TOK = StubTokenizer()


def _decoder(vocab=30, max_length=12, seed=0, width=32, bias_scale=0.0):
    mx.random.seed(seed)
    cfg = DecoderConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_layers=2,
        num_heads=4,
        intermediate_size=2 * width,
        max_length=max_length,
        dropout=0.1,
    )
    dec = TextDecoder(cfg)
    if bias_scale:
        dec.output_bias = mx.random.normal((vocab,)) * bias_scale
    dec.eval()
    return dec


def _images(batch=3, tokens=5, width=32, seed=1):
    mx.random.seed(seed)
    return mx.random.normal((batch, tokens, width))


def _seq_logprob(dec, image, seq, ban=(0, 1, 3)):
    """Teacher-forced log-probability of a generated sequence (same token bans)."""
    inputs = mx.array([[START, *seq[:-1]]])
    logits = np.array(dec(inputs, image[None]))[0].astype(np.float64)
    logits[:, list(ban)] = -np.inf
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp -= logits.max(-1, keepdims=True)
    return float(sum(logp[i, t] for i, t in enumerate(seq)))


def _run(dec, images, **options):
    return decode(dec, images, TOK, DecodingConfig(**options))


# ----------------------------------------------------------------------------- greedy


def test_greedy_matches_step_by_step_argmax_of_full_forward():
    dec = _decoder()
    images = _images()
    caps = _run(dec, images, max_length=8)
    for b, cap in enumerate(caps):
        seq = [START]
        for _ in range(8):
            logits = np.array(dec(mx.array([seq]), images[b : b + 1]))[0, -1]
            logits[[0, 1, 3]] = -np.inf
            seq.append(int(np.argmax(logits)))
            if seq[-1] == END:
                break
        assert cap.token_ids == seq[1:]
        assert cap.finished == (seq[-1] == END)
        assert cap.logprob == pytest.approx(_seq_logprob(dec, images[b], cap.token_ids), abs=1e-4)
        assert cap.score == cap.logprob
        assert cap.text == TOK.decode(cap.token_ids)


def test_compiled_and_eager_steps_agree():
    dec = _decoder()
    images = _images()
    for options in ({}, {"strategy": "beam", "num_beams": 3}, {"strategy": "sample", "seed": 3}):
        a = _run(dec, images, compile=True, **options)
        b = _run(dec, images, compile=False, **options)
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        np.testing.assert_allclose([c.score for c in a], [c.score for c in b], atol=1e-5)


# ----------------------------------------------------------------------------- beam search


def test_beam_size_one_is_greedy():
    dec = _decoder(bias_scale=1.0)
    images = _images(batch=4)
    greedy = _run(dec, images, max_length=10)
    beam = _run(dec, images, strategy="beam", num_beams=1, max_length=10)
    assert [c.token_ids for c in beam] == [c.token_ids for c in greedy]
    np.testing.assert_allclose([c.logprob for c in beam], [c.logprob for c in greedy], atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_finds_the_best_of_all_sequences(length_penalty):
    """Vocab of 6 (3 usable tokens: <end>, 4, 5), max_length 4: 31 possible captions. A wide
    beam must rank them exactly as enumeration does."""
    max_len = 4
    dec = _decoder(vocab=6, max_length=max_len + 1, seed=2, bias_scale=1.0)
    images = _images(batch=2, seed=5)
    sequences = [
        list(s) + [END] for n in range(max_len) for s in itertools.product([4, 5], repeat=n)
    ]
    sequences += [list(s) for s in itertools.product([4, 5], repeat=max_len)]
    assert len(sequences) == 31
    caps = _run(
        dec,
        images,
        strategy="beam",
        num_beams=32,
        max_length=max_len,
        length_penalty=length_penalty,
        num_return_sequences=5,
    )
    for b, cap in enumerate(caps):
        scored = []
        for seq in sequences:
            lp = _seq_logprob(dec, images[b], seq)
            scored.append((lp / len(seq) ** length_penalty, lp, seq))
        scored.sort(key=lambda s: -s[0])
        found = [cap, *cap.alternatives]
        assert len(found) == 5
        for (score, lp, seq), c in zip(scored[:5], found, strict=True):
            assert c.token_ids == seq
            assert c.score == pytest.approx(score, abs=1e-4)
            assert c.logprob == pytest.approx(lp, abs=1e-4)
            assert c.finished == (seq[-1] == END)


def test_small_beam_scores_are_consistent_and_sorted():
    dec = _decoder(bias_scale=1.0)
    images = _images()
    caps = _run(dec, images, strategy="beam", num_beams=4, length_penalty=1.0)
    for b, cap in enumerate(caps):
        found = [cap, *cap.alternatives]
        assert len(found) == 4
        scores = [c.score for c in found]
        assert scores == sorted(scores, reverse=True)
        for c in found:
            lp = _seq_logprob(dec, images[b], c.token_ids)
            assert c.logprob == pytest.approx(lp, abs=1e-4)
            assert c.score == pytest.approx(lp / len(c.token_ids), abs=1e-4)


def test_beam_not_early_stopping_is_at_least_as_good():
    dec = _decoder(bias_scale=1.0)
    images = _images()
    early = _run(dec, images, strategy="beam", num_beams=2, early_stopping=True)
    late = _run(dec, images, strategy="beam", num_beams=2, early_stopping=False)
    for a, b in zip(early, late, strict=True):
        assert b.score >= a.score - 1e-6


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"strategy": "beam", "num_beams": 3},
        {"strategy": "beam", "num_beams": 3, "no_repeat_ngram_size": 2},
        {"repetition_penalty": 1.5, "min_length": 3},
    ],
)
def test_batched_equals_one_image_at_a_time(options):
    dec = _decoder(bias_scale=1.0)
    images = _images(batch=3)
    together = _run(dec, images, **options)
    for b in range(3):
        (alone,) = _run(dec, images[b : b + 1], **options)
        assert alone.token_ids == together[b].token_ids
        assert alone.score == pytest.approx(together[b].score, abs=1e-5)
        assert [a.token_ids for a in alone.alternatives] == [
            a.token_ids for a in together[b].alternatives
        ]


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_seed():
    dec = _decoder()
    images = _images()
    a = _run(dec, images, strategy="sample", seed=7, num_return_sequences=3)
    b = _run(dec, images, strategy="sample", seed=7, num_return_sequences=3)
    c = _run(dec, images, strategy="sample", seed=8, num_return_sequences=3)

    def ids(caps):
        return [[x.token_ids for x in (cap, *cap.alternatives)] for cap in caps]

    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    for b_, cap in enumerate(a):
        for x in (cap, *cap.alternatives):
            assert x.logprob == pytest.approx(_seq_logprob(dec, images[b_], x.token_ids), abs=1e-4)


def test_sampling_follows_the_model_distribution():
    dec = _decoder(vocab=8, bias_scale=1.0)
    image = _images(batch=1)
    n = 4000
    (cap,) = _run(dec, image, strategy="sample", seed=0, max_length=1, num_return_sequences=n)
    first = [x.token_ids[0] for x in (cap, *cap.alternatives)]
    counts = np.bincount(first, minlength=8) / n
    logits = np.array(dec(mx.array([[START]]), image))[0, -1].astype(np.float64)
    logits[[0, 1, 3]] = -np.inf
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    np.testing.assert_allclose(counts, probs, atol=0.03)

    (cap,) = _run(
        dec, image, strategy="sample", seed=0, max_length=1, num_return_sequences=500, top_k=2
    )
    top2 = set(np.argsort(-probs)[:2].tolist())
    assert {x.token_ids[0] for x in (cap, *cap.alternatives)} == top2


def test_top_k_one_and_low_temperature_are_greedy():
    dec = _decoder(bias_scale=1.0)
    images = _images()
    greedy = [c.token_ids for c in _run(dec, images)]
    assert [c.token_ids for c in _run(dec, images, strategy="sample", top_k=1, seed=1)] == greedy
    cold = _run(dec, images, strategy="sample", temperature=1e-4, seed=1)
    assert [c.token_ids for c in cold] == greedy


def test_top_p_and_top_k_filters():
    logits = mx.log(mx.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.array(_filter_top_p(logits, 0.7)))[0]
    np.testing.assert_array_equal(kept, [True, True, False, False])
    kept = np.isfinite(np.array(_filter_top_p(logits, 0.4)))[0]
    np.testing.assert_array_equal(kept, [True, False, False, False])
    kept = np.isfinite(np.array(_filter_top_k(logits, 3)))[0]
    np.testing.assert_array_equal(kept, [True, True, True, False])


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    "options",
    [{}, {"strategy": "beam", "num_beams": 3}, {"strategy": "sample", "seed": 0}],
)
def test_max_length_respected_when_end_never_comes(options):
    dec = _decoder()
    dec.output_bias = mx.zeros((30,)).at[END].add(-1e4)
    for max_length in (1, 5, 11):
        caps = _run(dec, _images(), max_length=max_length, **options)
        for cap in caps:
            assert len(cap.token_ids) == max_length
            assert not cap.finished and END not in cap.token_ids
    # The default is the decoder's positions minus one, the most a training caption uses.
    assert all(len(c.token_ids) == 11 for c in _run(dec, _images(), **options))


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "num_beams": 3}])
def test_end_stops_and_min_length_delays_it(options):
    dec = _decoder()
    dec.output_bias = mx.zeros((30,)).at[END].add(1e4)
    for cap in _run(dec, _images(), **options):
        assert cap.token_ids == [END] and cap.finished and cap.text == ""
    for cap in _run(dec, _images(), min_length=3, **options):
        assert len(cap.token_ids) == 4 and cap.token_ids[-1] == END
        assert END not in cap.token_ids[:-1]


def test_specials_are_never_generated():
    dec = _decoder()
    dec.output_bias = mx.zeros((30,)).at[mx.array([0, 1, 3])].add(1e4)
    for options in ({}, {"strategy": "beam", "num_beams": 2}, {"strategy": "sample", "seed": 1}):
        for cap in _run(dec, _images(), **options):
            assert not {0, 1, 3} & set(cap.token_ids)


# ----------------------------------------------------------------------------- repetition


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "num_beams": 3}])
def test_no_repeat_ngram(options):
    dec = _decoder(bias_scale=3.0)
    dec.output_bias = dec.output_bias.at[END].add(-1e4)  # long captions, repeats likely
    plain = _run(dec, _images(), **options)
    assert any(len(set(c.token_ids)) < len(c.token_ids) for c in plain)
    for n in (1, 2):
        for cap in _run(dec, _images(), no_repeat_ngram_size=n, **options):
            grams = [tuple(cap.token_ids[i : i + n]) for i in range(len(cap.token_ids) - n + 1)]
            assert len(grams) == len(set(grams))


def test_ngram_bans_and_repetition_penalty_helpers():
    history = np.array([[5, 6, 7, 5, 6, 0]])
    ban = _ngram_bans(history, np.array([5]), 3, 10)
    assert np.flatnonzero(ban[0]).tolist() == [7]  # "5 6" was followed by 7
    ban = _ngram_bans(history, np.array([5]), 1, 10)
    assert np.flatnonzero(ban[0]).tolist() == [5, 6, 7]
    logits = mx.array([[2.0, -2.0, 2.0, -2.0]])
    seen = mx.array([[True, True, False, False]])
    out = np.array(_apply_repetition_penalty(logits, seen, 2.0))
    np.testing.assert_allclose(out, [[1.0, -4.0, 2.0, -2.0]])


def test_repetition_penalty_reduces_repeats():
    dec = _decoder(bias_scale=3.0)
    dec.output_bias = dec.output_bias.at[END].add(-1e4)

    def repeats(caps):
        return sum(len(c.token_ids) - len(set(c.token_ids)) for c in caps)

    assert repeats(_run(dec, _images(), repetition_penalty=100.0)) < repeats(_run(dec, _images()))


# ----------------------------------------------------------------------------- attention maps


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "num_beams": 3}])
def test_attention_maps_per_token(options):
    dec = _decoder()
    images = _images(tokens=5)
    caps = _run(dec, images, return_attention=True, **options)
    for b, cap in enumerate(caps):
        n = len(cap.token_ids)
        assert cap.attention.shape == (n, 5)
        np.testing.assert_allclose(cap.attention.sum(-1), 1.0, atol=1e-5)
        # Same as the full forward's cross-attention, averaged over layers and heads.
        inputs = mx.array([[START, *cap.token_ids[:-1]]])
        _, maps = dec(inputs, images[b : b + 1], return_attention=True)
        ref = np.mean([np.array(m[0]).mean(0) for m in maps], axis=0)
        np.testing.assert_allclose(cap.attention, ref, atol=1e-5)
    assert caps[0].to_dict()["attention"][0] == pytest.approx(caps[0].attention[0].tolist())


def test_attention_grid_drops_class_token():
    dec = _decoder()
    (cap,) = _run(dec, _images(batch=1, tokens=10), return_attention=True, max_length=3)
    grid = cap.attention_grid()
    assert grid.shape == (len(cap.token_ids), 3, 3)
    np.testing.assert_allclose(grid.reshape(len(grid), -1), cap.attention[:, 1:])


# ----------------------------------------------------------------------------- misc


def test_training_mode_restored_and_dropout_off_while_generating():
    dec = _decoder()
    dec.train()
    a = _run(dec, _images())
    assert dec.training
    dec.eval()
    b = _run(dec, _images())
    assert [c.token_ids for c in a] == [c.token_ids for c in b]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strategy": "nope"}, "unknown strategy"),
        ({"max_length": 13}, "max_length"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"num_return_sequences": 2}, "greedy"),
        ({"strategy": "beam", "num_beams": 2, "num_return_sequences": 3}, "exceed"),
    ],
)
def test_bad_options_refused(options, message):
    with pytest.raises(UserError, match=message):
        _run(_decoder(), _images(batch=1), **options)
    with pytest.raises(UserError, match="unknown decoding option"):
        DecodingConfig().replace(beams=3)


def test_compiled_step_sees_weight_updates():
    """The compiled step is cached on the decoder; training between calls must be seen."""
    dec = _decoder()
    images = _images()
    before = _run(dec, images)
    new_bias = mx.random.normal((30,)) * 5
    dec.update({"output_bias": new_bias})
    after = _run(dec, images)
    eager = _run(dec, images, compile=False)
    assert [c.token_ids for c in after] == [c.token_ids for c in eager]
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
