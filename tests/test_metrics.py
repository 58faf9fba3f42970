"""Caption metrics: parity with pycocoevalcap, the Java-free tokenizer, agreement, loaders."""

import json
import math
from pathlib import Path

import pytest
from prerequisites import requires
from shared_data import FLICKR8K, needs_flickr8k

from mlx_caption import metrics
from mlx_caption.errors import UserError
from mlx_caption.metrics import (
    canonical_id,
    leave_one_out_scores,
    load_preds,
    load_refs,
    ptb_tokenize_lines,
    reference_agreement,
    score_captions,
    scoring,
    tokenize_python,
)

FLICKR_DIR = FLICKR8K
needs_flickr = needs_flickr8k
needs_java = requires(
    metrics.java_available(), "a working java (pycocoevalcap's PTB tokenizer, METEOR)"
)
KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
NO_METEOR = ["Bleu", "ROUGE_L", "CIDEr"]

# Input -> CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase output with pycocoevalcap's
# punctuation removed (recorded from the jar; test_tricky_table_matches_java re-checks it).
TRICKY = [
    (
        "A man's dog isn't running; it's \"sleeping\" (on a mat).",
        "a man 's dog is n't running it 's sleeping -lrb- on a mat -rrb-",
    ),
    (
        "He can't, won't and cannot go -- they're gonna wanna stay.",
        "he ca n't wo n't and can not go they 're gon na wan na stay",
    ),
    (
        "A black-and-white dog wearing a t-shirt jumps over a 3-year-old's toy.",
        "a black-and-white dog wearing a t-shirt jumps over a 3-year-old 's toy",
    ),
    (
        "The U.S. flag flies at Mt. Rushmore near St. Louis, Mo. at 3:30 p.m.",
        "the u.s. flag flies at mt. rushmore near st. louis mo. at 3:30 p.m.",
    ),
    ("Two dogs' toys lie on the children's bed...", "two dogs toys lie on the children 's bed"),
    ('A sign reads "STOP" & "Go!"', "a sign reads stop & go"),
    (
        "A woman in a red/white shirt holds a 1/2 gallon jug [empty] {full}.",
        "a woman in a red/white shirt holds a 1/2 gallon jug -lsb- empty -rsb- -lcb- full -rcb-",
    ),
    ("Rock 'n' roll fans at o'clock y'all ma'am", "rock 'n' roll fans at o'clock y' all ma'am"),
    ("A dog jumps!! Why? Because!?", "a dog jumps !! why because !?"),
    (
        "A man wearing #23 jersey, @home, 50% off $5 deals.",
        "a man wearing # 23 jersey @home 50 % off $ 5 deals",
    ),
    (
        "A caf\u00e9 in na\u00efve Z\u00fcrich \u2014 the \u201cbest\u201d place\u2026",
        "a caf\u00e9 in na\u00efve z\u00fcrich the best place",
    ),
    ("The letters A.B.C. on a blackboard.", "the letters a.b.c. on a blackboard"),
    ("A skier in mid-air ... over a --- jump", "a skier in mid-air over a jump"),
    ("the dog is brown.The cat is black", "the dog is brown.the cat is black"),
    ("A sign that says A. The dog looks", "a sign that says a the dog looks"),
    (
        "Mr. Smith and Dr. Jones of Acme Inc. The end",
        "mr. smith and dr. jones of acme inc. the end",
    ),
    ("people in the 90s '90s 1990s", "people in the 90s '90s 1990s"),
    ("a :) smiley and a :( frown", "a :-rrb- smiley and a :-lrb- frown"),
    (
        "I'm here, you're there, we'll go, they'd stay, she's gone",
        "i 'm here you 're there we 'll go they 'd stay she 's gone",
    ),
    (
        "An e-mail at bob@example.com or www.example.com",
        "an e-mail at bob@example.com or www.example.com",
    ),
    ("(555) 555-5555 is a phone number", "-lrb-555-rrb-\u00a0555-5555 is a phone number"),
    ("A co-ed team plays soccer", "a co-ed team plays soccer"),
    ("Im lookin' at 'em", "im lookin at 'em"),
]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def flickr_case():
    """300 Flickr8k test images: caption 0 as the prediction, captions 1-4 as references."""
    refs_all = load_refs(FLICKR_DIR / "Flickr8k.token.txt")
    names = (FLICKR_DIR / "Flickr_8k.testImages.txt").read_text(encoding="utf-8").split()
    ids = [canonical_id(Path(n).stem) for n in names[:300]]
    refs = {i: refs_all[i][1:] for i in ids}
    preds = {i: refs_all[i][0] for i in ids}
    return refs, preds, {i: refs_all[i] for i in ids}


@pytest.fixture(scope="module")
def java_run(flickr_case):
    """pycocoevalcap's own pipeline and ours on the Flickr case: each METEOR JVM starts once."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, preds, _ = flickr_case
    # Popen returns at once: its JVM loads the paraphrase table while ours does too.
    reference_meteor = Meteor()
    ours = score_captions(refs, preds, tokenizer="java", per_image=True)
    # As COCOEvalCap.evaluate does it: tokenize gts and res, then each scorer.
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in refs})
    res = tok.tokenize({i: [{"caption": preds[i]}] for i in refs})
    expected = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected.update({f"Bleu_{n + 1}": bleu[n] for n in range(4)})
    expected["METEOR"], meteor_per_image = reference_meteor.compute_score(gts, res)
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    del reference_meteor
    return ours, expected, meteor_per_image, gts, res


# ------------------------------------------------------------------ parity with Java


@needs_java
@needs_flickr
def test_score_equals_pycocoevalcap(java_run):
    ours, expected, meteor_per_image, _, _ = java_run
    assert ours["tokenizer"] == "ptb-java" and ours["meteor_available"] is True
    assert ours["images"] == 300
    for key in KEYS:
        assert ours[key] == pytest.approx(expected[key], abs=1e-9), key
    assert list(ours["per_image"]["METEOR"].values()) == pytest.approx(meteor_per_image, abs=1e-9)
    # Sanity: one Flickr caption against the other four is a mid-range captioner.
    assert 0.15 < ours["Bleu_4"] < 0.3 and 0.5 < ours["CIDEr"] < 1.2


@needs_java
@needs_flickr
def test_python_tokenizer_matches_java_on_flickr(flickr_case, java_run):
    refs, preds, _ = flickr_case
    ours_java, _, _, gts, res = java_run
    py = score_captions(refs, preds, tokenizer="python")
    assert py["tokenizer"] == "ptb-python" and py["METEOR"] is None
    assert py["meteor_available"] is False
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]:
        assert abs(py[key] - ours_java[key]) <= 0.01 * abs(ours_java[key]), key
    # Stronger than 1%: the tokens themselves are pycocoevalcap's, caption for caption.
    flat = [c for i in refs for c in refs[i]] + [preds[i] for i in refs]
    expected = [c for i in refs for c in gts[i]] + [res[i][0] for i in refs]
    assert tokenize_python(flat) == expected


@needs_java
def test_tricky_table_matches_java():
    assert metrics.tokenize_java([s for s, _ in TRICKY]) == [t for _, t in TRICKY]


@needs_java
def test_java_path_survives_odd_captions(java_run):
    # Reuses the METEOR process started by java_run (no second JVM start).
    refs = {1: ["a dog runs", "a brown dog"], 2: ["two men", "men talk"], 3: ["x", "y z"]}
    preds = {1: "", 2: "men ||| talk\nloudly", 3: "\u00fcber caf\u00e9 \u2014 \u201cok\u201d"}
    out = score_captions(refs, preds, tokenizer="java")
    for key in KEYS:
        assert math.isfinite(out[key]), key
    assert out["ROUGE_L"] > 0


# ---------------------------------------------------------------- Python tokenizer


@pytest.mark.parametrize(("text", "expected"), TRICKY)
def test_python_tokenizer_tricky(text, expected):
    assert tokenize_python([text]) == [expected]


def test_ptb_tokens_raw():
    lines = ["Cannot go, Jr.", "A 1 1/2 inch (big) one", "", "don\u2019t \u201cquote\u201d"]
    assert ptb_tokenize_lines(lines) == [
        ["Can", "not", "go", ",", "Jr.", "."],  # a capital follows on the next line
        ["A", "1\u00a01/2", "inch", "-LRB-", "big", "-RRB-", "one"],
        [],
        ["do", "n't", "``", "quote", "''"],
    ]


def test_newlines_inside_a_caption_do_not_shift_lines():
    out = tokenize_python(["a dog\nruns.", "two\rcats", "a bird"])
    assert out == ["a dog runs", "two cats", "a bird"]


# ----------------------------------------------------- agreement and leave-one-out


def _same_refs_case():
    # Every image: five identical references; the sentences share no words across images.
    sents = [
        "a brown dog runs on the grass",
        "two men ride red bikes downhill",
        "one grey cat sleeps soundly",
    ]
    return {i: [s] * 5 for i, s in enumerate(sents)}


def test_reference_agreement_identical_refs_is_perfect():
    out = reference_agreement(_same_refs_case(), tokenizer="python")
    assert out["folds"] == 5 and out["images"] == 3 and len(out["per_fold"]) == 5
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"]:
        assert out[key] == pytest.approx(1.0, abs=1e-9), key
    # CIDEr-D of a candidate identical to all its references: 10 (the scorer's scale; every
    # sentence has 4-grams and no n-gram is shared across images, so every idf is > 0).
    assert out["CIDEr"] == pytest.approx(10.0, abs=1e-9)
    assert out["METEOR"] is None and out["tokenizer"] == "ptb-python"


def test_leave_one_out_matches_agreement_fold_and_manual_scores():
    refs = {
        1: [
            "a dog runs on the grass",
            "a brown dog running",
            "dog on grass",
            "the dog plays outside",
            "a puppy runs",
        ],
        2: [
            "two men ride bikes",
            "men on bicycles",
            "two cyclists ride",
            "people ride bikes downhill",
            "two men cycling on a road",
        ],
        3: [
            "a cat sleeps on a sofa",
            "a sleeping cat",
            "cat on a couch",
            "the kitten naps on the sofa",
            "a grey cat is asleep",
            "a sixth reference that always stays",
        ],
    }
    preds = {k: v[0] for k, v in refs.items()}
    agree = reference_agreement(refs, tokenizer="python", metrics=NO_METEOR)
    loo = leave_one_out_scores(refs, preds, tokenizer="python", metrics=NO_METEOR)
    assert agree["folds"] == loo["folds"] == 5  # the smallest number of references
    assert "METEOR" not in agree and "METEOR" not in loo
    # Fold 1 (k=0): the prediction *is* reference 0, against the same four others.
    for key in loo["per_fold"][0]:
        assert loo["per_fold"][0][key] == pytest.approx(agree["per_fold"][0][key], abs=1e-12)
    for k in range(5):
        held_out = {i: c[:k] + c[k + 1 :] for i, c in refs.items()}
        manual = score_captions(held_out, preds, tokenizer="python", metrics=NO_METEOR)
        for key in loo["per_fold"][k]:
            assert loo["per_fold"][k][key] == pytest.approx(manual[key], abs=1e-12)
        held = {i: c[k] for i, c in refs.items()}
        manual = score_captions(held_out, held, tokenizer="python", metrics=NO_METEOR)
        assert agree["per_fold"][k]["CIDEr"] == pytest.approx(manual["CIDEr"], abs=1e-12)
    for key in ["Bleu_4", "ROUGE_L", "CIDEr"]:
        assert loo[key] == pytest.approx(sum(f[key] for f in loo["per_fold"]) / 5, abs=1e-12)
    # For k >= 1 the prediction (reference 0) is inside the reference set: a perfect match.
    assert loo["per_fold"][1]["ROUGE_L"] == pytest.approx(1.0)
    assert loo["ROUGE_L"] > agree["ROUGE_L"]


def test_agreement_needs_two_references():
    with pytest.raises(UserError, match="at least 2"):
        reference_agreement({1: ["a dog", "a cat"], 2: ["one"]}, tokenizer="python")


def test_disjoint_prediction_scores_zero():
    refs = _same_refs_case()
    preds = {i: "zebra xylophone quartz" for i in refs}
    out = score_captions(refs, preds, tokenizer="python", metrics=NO_METEOR)
    assert out["ROUGE_L"] == 0.0 and out["CIDEr"] == 0.0
    assert out["Bleu_1"] < 1e-6


# ---------------------------------------------------------------- API behaviour


def test_score_refuses_mismatched_images():
    with pytest.raises(UserError) as err:
        score_captions({1: ["a"], 2: ["b"], 3: ["c"]}, {1: "a", 4: "d"}, tokenizer="python")
    msg = str(err.value)
    assert "1 predicted image(s) have no references: 4" in msg
    assert "2 referenced image(s) have no prediction: 2, 3" in msg


def test_metric_selection_and_per_image():
    refs = {1: ["a dog runs", "a dog"], 2: ["two men", "men talk"]}
    preds = {1: "a dog runs", 2: "a cat"}
    out = score_captions(
        refs, preds, tokenizer="python", metrics=["cider", "Bleu_4"], per_image=True
    )
    assert [k for k in KEYS if k in out] == ["Bleu_4", "CIDEr"]
    assert set(out["per_image"]) == {"Bleu_4", "CIDEr"}
    assert set(out["per_image"]["CIDEr"]) == {1, 2}
    assert out["per_image"]["CIDEr"][1] > out["per_image"]["CIDEr"][2]
    with pytest.raises(UserError, match="unknown metric"):
        score_captions(refs, preds, tokenizer="python", metrics=["SPICE"])
    with pytest.raises(UserError, match="unknown tokenizer"):
        score_captions(refs, preds, tokenizer="nltk")


def test_auto_without_java_falls_back(monkeypatch):
    # Patched where the scorers look it up: the package's re-export would not reach them.
    monkeypatch.setattr(scoring, "java_available", lambda: False)
    refs = {1: ["a dog runs", "a dog"], 2: ["two men", "men talk"]}
    out = score_captions(refs, {1: "a dog", 2: "two men"})
    assert out["tokenizer"] == "ptb-python" and out["meteor_available"] is False
    assert out["METEOR"] is None and out["Bleu_1"] > 0
    with pytest.raises(UserError, match="java"):
        score_captions(refs, {1: "a dog", 2: "two men"}, tokenizer="java")


def test_java_failures_degrade_under_auto(monkeypatch):
    refs = {1: ["a dog runs", "a dog"], 2: ["two men", "men talk"]}
    preds = {1: "a dog", 2: "two men"}
    monkeypatch.setattr(scoring, "java_available", lambda: True)

    def broken_java(captions):
        raise RuntimeError("PTBTokenizer failed: boom")

    monkeypatch.setattr(scoring, "tokenize_java", broken_java)
    with pytest.warns(UserWarning, match="Python one"):
        out = score_captions(refs, preds, metrics=NO_METEOR)
    assert out["tokenizer"] == "ptb-python"
    with pytest.raises(RuntimeError, match="boom"):
        score_captions(refs, preds, tokenizer="java")

    class DeadMeteor:
        def compute_score(self, gts, res):
            raise RuntimeError("METEOR process ended unexpectedly")

    monkeypatch.setattr(scoring, "tokenize_java", tokenize_python)
    monkeypatch.setattr(scoring, "shared_meteor", DeadMeteor)
    monkeypatch.setattr(scoring, "close_meteor", lambda: None)  # keep the shared JVM alive
    with pytest.warns(UserWarning, match="METEOR failed"):
        out = score_captions(refs, preds, tokenizer="java")
    assert out["tokenizer"] == "ptb-java" and out["METEOR"] is None
    assert out["meteor_available"] is False and out["CIDEr"] > 0


# --------------------------------------------------------------------- loaders


def test_load_refs_coco(tmp_path):
    path = tmp_path / "captions_val2014.json"
    data = {
        "images": [{"id": 42, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 42, "id": 1, "caption": "A dog. "},
            {"image_id": 7, "id": 2, "caption": "A cat."},
            {"image_id": 42, "id": 3, "caption": "A brown dog."},
        ],
    }
    path.write_text(json.dumps(data))
    assert load_refs(path) == {42: ["A dog.", "A brown dog."], 7: ["A cat."]}
    with pytest.raises(UserError, match="no splits"):
        load_refs(path, split="test")


def test_load_refs_karpathy_split_and_ids(tmp_path):
    def img(split, n, **ids):
        return {
            "split": split,
            "filename": f"{n}.jpg",
            "sentences": [{"raw": f"caption {n} a", "tokens": []}, {"tokens": ["tok", str(n)]}],
            **ids,
        }

    coco = tmp_path / "dataset_coco.json"
    coco.write_text(
        json.dumps(
            {
                "images": [
                    img("test", 1, cocoid=391895, imgid=0),
                    img("val", 2, cocoid=5, imgid=1),
                    img("restval", 3, cocoid=6, imgid=2),
                    img("train", 4, cocoid=8, imgid=3),
                ]
            }
        )
    )
    assert load_refs(coco, split="test") == {391895: ["caption 1 a", "tok 1"]}
    assert set(load_refs(coco, split="train")) == {6, 8}  # restval is training data
    assert set(load_refs(coco)) == {391895, 5, 6, 8}
    with pytest.raises(UserError, match=r"no images in split 'tset' \(splits: restval, test"):
        load_refs(coco, split="tset")
    flickr = tmp_path / "dataset_flickr8k.json"
    flickr.write_text(json.dumps({"images": [img("test", 9, imgid=17), img("test", 10)]}))
    assert load_refs(flickr, split="test") == {
        17: ["caption 9 a", "tok 9"],
        1: ["caption 10 a", "tok 10"],
    }


def test_load_refs_reads_captions_only(tmp_path):
    # References whose images live elsewhere (or nowhere) still load: scoring opens none.
    path = tmp_path / "dataset_flickr8k.json"
    images = [
        {"filepath": "../../images", "filename": "a.jpg", "split": "dev", "imgid": 4},
        {"filepath": "/data", "filename": "b.jpg", "split": "val", "imgid": 5},
        {"filepath": "", "filename": "c.jpg", "split": "test", "imgid": 6},
    ]
    for n, img in enumerate(images):
        img["sentences"] = [{"raw": f"caption {n}"}]
    path.write_text(json.dumps({"images": images}))
    # The data loaders' split aliases: "dev" is "val" (as in training and mlx-caption eval).
    assert load_refs(path, split="val") == {4: ["caption 0"], 5: ["caption 1"]}
    assert load_refs(path, split="validation") == load_refs(path, split="dev")
    with pytest.raises(UserError, match=r"no images in split 'train' \(splits: dev, test, val\)"):
        load_refs(path, split="train")


def test_load_refs_refuses_damaged_files(tmp_path):
    # Skipping a bad line would change the scores silently: refused instead.
    token = tmp_path / "captions.token"
    token.write_text("a.jpg#0\tA dog.\nb.jpg#0 without a tab\n")
    with pytest.raises(UserError, match=r"1 malformed line\(s\) \(not 'IMAGE#K<TAB>caption'\)"):
        load_refs(token)
    karpathy = tmp_path / "dataset.json"
    karpathy.write_text(json.dumps({"images": [{"split": "test", "sentences": []}, 3]}))
    with pytest.raises(UserError, match="2 malformed image entries"):
        load_refs(karpathy)
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"caption": "x"}]}))
    with pytest.raises(UserError, match="2 malformed entries \\(annotations without an 'image_id'"):
        load_refs(coco)


@needs_flickr
def test_load_refs_flickr_token():
    refs = load_refs(FLICKR_DIR / "Flickr8k.token.txt")
    # 8092 images, but one caption line names "2258277193_586949ec62.jpg.1" (a known quirk
    # of the file), which stays its own image as in mlx_caption.data.sources.
    assert len(refs) == 8093 and sum(len(v) for v in refs.values()) == 40460
    assert len(refs["2258277193_586949ec62"]) == 4
    assert refs["1000268201_693b08cb0e"][0].startswith("A child in a pink dress")


def test_load_preds(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(
        json.dumps([{"image_id": "12", "caption": "a"}, {"image_id": "x_1", "caption": "b"}])
    )
    assert load_preds(path) == {12: "a", "x_1": "b"}
    path.write_text(json.dumps([{"image_id": 3, "caption": "a"}, {"image_id": 3, "caption": "b"}]))
    with pytest.raises(UserError, match="1 image.*more than one caption.*3"):
        load_preds(path)
    path.write_text(json.dumps({"image_id": 3, "caption": "a"}))
    with pytest.raises(UserError, match="JSON list"):
        load_preds(path)
    path.write_text(json.dumps([{"image": 3, "caption": "a"}]))
    with pytest.raises(UserError, match="lacks 'image_id'"):
        load_preds(path)


def test_canonical_id():
    assert canonical_id(5) == 5 and canonical_id("5") == 5 and canonical_id(5.0) == 5
    assert canonical_id("007") == "007"  # not COCO-style: kept as written
    assert canonical_id("1000268201_693b08cb0e") == "1000268201_693b08cb0e"
    with pytest.raises(UserError):
        canonical_id(None)
