"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, computed by pycocoevalcap.

The numbers are pycocoevalcap's, key for key ("Bleu_1".."Bleu_4", "METEOR", "ROUGE_L",
"CIDEr"; its "CIDEr" scorer is CIDEr-D: Gaussian length penalty with sigma 6 and clipped
n-gram counts). What this package adds around the scorers, one module each:

* :mod:`~mlx_caption.metrics.ptb_java`, :mod:`~mlx_caption.metrics.ptb_python`:
  tokenization. pycocoevalcap runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines
  -lowerCase`` (Java) and drops punctuation tokens (:mod:`~mlx_caption.metrics.ptb`). With
  Java present that is what runs here too (``"tokenizer": "ptb-java"``), once per call for
  references and predictions together. Without Java (or with ``tokenizer="python"``) a
  pure-Python re-implementation of that tokenizer runs instead (``"ptb-python"``), which
  gives the Java tokens on real captions. METEOR needs Java, so without it METEOR is
  ``None`` and ``"meteor_available"`` is false.
* :mod:`~mlx_caption.metrics.meteor`: one METEOR process, started on first use and kept
  (its JVM is slow to start); :func:`close_meteor` ends it early.
* :mod:`~mlx_caption.metrics.scoring`: :func:`score_captions`, and
  :mod:`~mlx_caption.metrics.names` the metric names it accepts.
* :mod:`~mlx_caption.metrics.leave_one_out`: :func:`reference_agreement` scores reference k
  against the other references and :func:`leave_one_out_scores` the prediction against the
  same sets, so a model's number and the human ceiling are measured on equal terms.
* :mod:`~mlx_caption.metrics.loading`: references (COCO captions, Karpathy, Flickr
  ``*.token``, read by :mod:`mlx_caption.data.sources`) and COCO results predictions, keyed
  by :mod:`~mlx_caption.metrics.ids`.
"""

from mlx_caption.metrics.ids import ImageId, canonical_id, check_same_images
from mlx_caption.metrics.java import java_available
from mlx_caption.metrics.leave_one_out import leave_one_out_scores, reference_agreement
from mlx_caption.metrics.loading import load_preds, load_refs
from mlx_caption.metrics.meteor import MeteorProcess, close_meteor
from mlx_caption.metrics.names import METRIC_KEYS, METRICS
from mlx_caption.metrics.ptb import PUNCTUATIONS
from mlx_caption.metrics.ptb_java import tokenize_java
from mlx_caption.metrics.ptb_python import ptb_tokenize_lines, tokenize_python
from mlx_caption.metrics.scoring import score_captions

__all__ = [
    "METRICS",
    "METRIC_KEYS",
    "PUNCTUATIONS",
    "ImageId",
    "MeteorProcess",
    "canonical_id",
    "check_same_images",
    "close_meteor",
    "java_available",
    "leave_one_out_scores",
    "load_preds",
    "load_refs",
    "ptb_tokenize_lines",
    "reference_agreement",
    "score_captions",
    "tokenize_java",
    "tokenize_python",
]
