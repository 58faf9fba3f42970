"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, computed by pycocoevalcap.

The numbers are pycocoevalcap's, key for key ("Bleu_1".."Bleu_4", "METEOR", "ROUGE_L",
"CIDEr"; its "CIDEr" scorer is CIDEr-D: Gaussian length penalty with sigma 6 and clipped
n-gram counts). What this module adds around the scorers:

* Tokenization. pycocoevalcap runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines
  -lowerCase`` (Java) and drops punctuation tokens. With Java present that is what runs
  here too (``"tokenizer": "ptb-java"``), once per call for references and predictions
  together. Without Java (or with ``tokenizer="python"``) a pure-Python re-implementation of
  that tokenizer runs instead (``"ptb-python"``): a longest-match lexer with the 3.4.1
  rules that matter for English text (clitics 's n't 're, cannot/gonna splits, hyphenated
  words kept whole, abbreviations and acronyms keeping their period, numbers, fractions,
  quotes to `` and '', brackets to -lrb- and friends). On all 40,460 Flickr8k captions it
  gives the Java tokens exactly. METEOR needs Java, so without it METEOR is ``None`` and
  ``"meteor_available"`` is false.
* METEOR's JVM loads a 60 MB paraphrase table (seconds, up to half a minute on a busy
  2-core machine), so one METEOR process is started on first use and kept for the life of
  the Python process (training evaluates many times); :func:`close_meteor` ends it early.
* Leave-one-out views: :func:`reference_agreement` scores reference k against the other
  references and :func:`leave_one_out_scores` the prediction against the same sets, so a
  model's number and the human ceiling are measured on equal terms.
* Loaders for COCO captions / Karpathy / Flickr ``*.token`` references and COCO results
  predictions.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlx_caption.errors import UserError

ImageId = int | str

#: Metric groups in pycocoevalcap's order, with the result keys each produces.
METRICS: dict[str, tuple[str, ...]] = {
    "Bleu": ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"),
    "METEOR": ("METEOR",),
    "ROUGE_L": ("ROUGE_L",),
    "CIDEr": ("CIDEr",),
}
METRIC_KEYS: tuple[str, ...] = tuple(k for keys in METRICS.values() for k in keys)

#: Tokens pycocoevalcap's PTBTokenizer drops after tokenizing (its PUNCTUATIONS list, kept
#: verbatim: the bracket entries are upper case, so the lower-cased "-lrb-" survives, as it
#: does in every published COCO number).
PUNCTUATIONS = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)

# Characters Java's lexer treats as line ends; inside a caption they would shift every
# following line of -preserveLines output, so they become spaces (pycocoevalcap only
# replaces "\n").
_LINE_BREAKS = re.compile("[\n\r\u2028\u2029\x0b\x0c\x85]")


# ----------------------------------------------------------------------------- Java side


def _package_dir() -> Path:
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0])


def _ptb_jar() -> Path:
    return _package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def _meteor_jar() -> Path:
    return _package_dir() / "meteor" / "meteor-1.5.jar"


@functools.lru_cache(maxsize=1)
def java_available() -> bool:
    """Whether a working ``java`` and pycocoevalcap's jars are here (checked once per process).

    Runs ``java -version`` rather than trusting ``which``: macOS ships a ``/usr/bin/java``
    stub that only asks to install a JDK.
    """
    java = shutil.which("java")
    if java is None or not _ptb_jar().is_file() or not _meteor_jar().is_file():
        return False
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _clean(caption: str) -> str:
    return _LINE_BREAKS.sub(" ", caption)


def _drop_punctuation(line: str) -> str:
    # Exactly pycocoevalcap's post-processing of one tokenizer output line.
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def tokenize_java(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's tokenization: CoreNLP PTBTokenizer (one JVM run), punctuation dropped."""
    captions = [_clean(c) for c in captions]
    if not captions:
        return []
    with tempfile.TemporaryDirectory(prefix="mlx-caption-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes("\n".join(captions).encode("utf-8"))
        cmd = ["java", "-cp", str(_ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer"]
        proc = subprocess.run(
            [*cmd, "-preserveLines", "-lowerCase", str(path)], capture_output=True
        )
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    # Trailing blank captions may leave no output line; anything else is a real mismatch.
    missing = captions[len(lines) :]
    if any(c.strip() for c in missing):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(captions)} captions")
    lines += [""] * len(missing)
    return [_drop_punctuation(line) for line in lines[: len(captions)]]


class MeteorProcess:
    """METEOR 1.5 over stdio, the protocol and arguments of pycocoevalcap's ``Meteor``.

    Unlike that class it fails with an error (instead of hanging on a held lock) when the
    JVM dies, and it can be closed explicitly.
    """

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        cmd = [
            "java",
            "-jar",
            "-Xmx2G",
            _meteor_jar().name,
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
        ]
        self._proc = subprocess.Popen(
            cmd,
            cwd=_meteor_jar().parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((line + "\n").encode())
        self._proc.stdin.flush()
        return self._read()

    def _read(self) -> str:
        assert self._proc.stdout is not None
        out = self._proc.stdout.readline()
        if not out:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"METEOR process ended unexpectedly: {err}")
        return out.decode().strip()

    def compute_score(
        self, gts: Mapping[Any, list[str]], res: Mapping[Any, list[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-image scores, as ``pycocoevalcap.meteor.Meteor.compute_score``."""
        with self._lock:
            stats = []
            for key in gts:
                hyp = res[key][0].replace("|||", "").replace("  ", " ")
                stats.append(self._ask(" ||| ".join(("SCORE", " ||| ".join(gts[key]), hyp))))
            assert self._proc.stdin is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self._proc.stdin.flush()
            scores = [float(self._read()) for _ in stats]
            return float(self._read()), scores

    def close(self) -> None:
        """End the JVM (idempotent)."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


_meteor: MeteorProcess | None = None
_meteor_lock = threading.Lock()


def _get_meteor() -> MeteorProcess:
    global _meteor
    with _meteor_lock:
        if _meteor is None or not _meteor.alive():
            _meteor = MeteorProcess()
        return _meteor


def close_meteor() -> None:
    """End the shared METEOR process (it is restarted on next use)."""
    global _meteor
    with _meteor_lock:
        if _meteor is not None:
            _meteor.close()
            _meteor = None


atexit.register(close_meteor)


# --------------------------------------------------------------------------- Python side
#
# A re-implementation of the rules of Stanford CoreNLP 3.4.1's PTBLexer (a JFlex scanner:
# at each position the longest match wins, the earlier rule on ties, and a rule's trailing
# context counts towards its length), with the options PTBTokenizer uses by default
# (ptb3Escaping without americanize). Written from the documented behaviour and checked
# token for token against the jar: the Flickr8k captions, hand-made tricky strings and
# fuzzed strings (about 5 in 20,000 fuzzed lines still differ, all of them letters glued
# to digits and dots, like "3.5D.C.").


def _letter_class() -> str:
    """The BMP letters (Java's Character.isLetter ~ str.isalpha) as regex class ranges."""
    parts, start, prev = [], None, None
    for cp in range(0x10000):
        ok = not 0xD800 <= cp <= 0xDFFF and chr(cp).isalpha()
        if ok:
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            a, b = re.escape(chr(start)), re.escape(chr(prev))
            parts.append(a if start == prev else f"{a}-{b}")
            start = None
    return "".join(parts) + "\u00ad\u0300-\u036f"  # plus soft hyphen and combining marks


def _latex_quotes(tok: str, left: bool) -> str:
    tok = re.sub("&apos;|'", "`" if left else "'", tok)
    tok = re.sub('"|&quot;', "``" if left else "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _currency(tok: str) -> str:
    tok = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", tok)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}


def _nbsp(tok: str) -> str:
    return tok.replace(" ", "\u00a0")


def _no_soft_hyphen(tok: str) -> str:
    return tok.replace("\u00ad", "")


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


def _no_amp_entity(tok: str) -> str:
    return tok.replace("&amp;", "&")


def _left_quote(tok: str) -> str:
    return _latex_quotes(tok, True)


def _right_quote(tok: str) -> str:
    return _latex_quotes(tok, False)


def _const(value: str) -> Callable[[str], str]:
    return lambda _tok: value


@functools.lru_cache(maxsize=1)
def _lexer() -> tuple[dict[str, list], re.Pattern, re.Pattern, re.Pattern]:
    """Compile the rules once, on first use (building the letter class takes ~20 ms)."""
    let_chars = _letter_class()
    LET = f"(?:[{let_chars}]|&[aeiouAEIOU](?:acute|grave|uml);)"
    DIG = "[0-9\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u07c0-\u07c9]"
    ALNUM = f"[{let_chars}{DIG[1:-1]}]"
    SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
    SPNL = "[ \t\u00a0\u2000-\u200a\u3000\n]"
    APOS = "(?:['\u0092\u2019]|&apos;)"
    APOSETC = "(?:['\u0092\u2019`\u0091\u2018\u201b]|&apos;)"
    HYPHEN = "[-_\u058a\u2010\u2011]"

    WORD = f"{LET}(?:{LET}|{DIG})*(?:[.!?]{LET}(?:{LET}|{DIG})*)*"
    REDAUX = f"{APOS}(?i:[msd]|re|ve|ll)"
    SWORD = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
    SREDAUX = f"(?i:n){APOSETC}(?i:t)"
    # Python alternation is first-match, JFlex longest-match: longer alternatives go first.
    NUM = f"{DIG}*(?:[.:,\u00ad\u066b\u066c]{DIG}+)+|{DIG}+"
    NUMBER = f"[-+]?(?:{NUM})"
    ACRO = (
        r"[A-Za-z](?:\.[A-Za-z])+|(?i:Canada|Sino|Korean|EU|Japan|non)-(?i:U\.S)"
        r"|(?i:U\.S\.-(?:U\.K|U\.S\.S\.R))"
    )
    # Abbreviations that keep their period. Case-insensitive except where the lexer asks for
    # a capital (state names that are also words: Ark, Ill, Mass, ...).
    abbrev1_ci = (
        "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Mon|Tues?|Wed|Thu|Thurs|Fri"
        "|Ala|Ariz|Calif|Colo|Conn|Ct|Dak|Fla|Ga|Ind|Kans?|Ky|Md|Mich|Minn|Mo|Mont|Neb|Nev|Okla"
        "|Penn|Tenn|Va|Vt|Wisc?|Wyo|Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Bancorp|Bhd|Assn|Univ|Intl|Sys"
        r"|tel|est|ext|sq|Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq|etc|al|seq"
    )
    abbrev1_cs = (
        "A(?i:rk)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass)|M(?i:iss)|O(?i:re)|P(?i:a)|T(?i:ex)|W(?i:ash)"
    )
    ABBREV1 = f"(?:(?i:{abbrev1_ci})|{abbrev1_cs})\\."
    titles = (
        "Mrs|Mr|Ms|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl"
        "|Pvt|Mt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Ft"
        "|Invt|Elec|Natl|M[ft]g|Dept"
    )
    ABBREV4 = f"(?:{ACRO}|(?i:a\\.k\\.a|{titles}|vs|Alex|Wm|Jos|Cie|cf|TREAS)|M(?i:iss)|[A-Za-z])"
    ABBREV3 = r"(?i:ca|figs?|prop|nos?|arts?|bldg|pp|op)\."  # only before a number

    THING = (
        f"(?:[dDoOlL]{APOSETC}{ALNUM})?{ALNUM}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{ALNUM})?{ALNUM}+)*"
    )
    HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|(?:{ACRO})\\.))+"
    THINGA = "[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
    THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
    APOWORD = "|".join(
        [
            f"{APOS}(?i:n){APOS}?",
            f"[lLdDjJ]{APOS}",
            f"(?i:dunkin|somethin|ol){APOS}",
            f"{APOS}(?i:em)",
            f"[A-HJ-XZn]{APOSETC}{LET}{LET}{LET}*",
            f"{APOS}[2-9]0(?i:s)",
            f"{APOS}(?i:till?)",
            f"{LET}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{LET}*",
            f"{APOS}(?i:cause)",
            r"(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        ]
    )
    FULLURL = r"(?i:https?)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]"
    # ",-_" is a character range in the original too (it excludes digits and capitals).
    LIKELYURL = (
        r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
        r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))"
        r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"
    )
    EMAIL = (
        r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:&gt;|>)?"
    )
    PHONE = (
        r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
        r"[0-9]{3,4}[- \u00a0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"
    )
    FRAC = f"(?:{DIG}{{1,4}}[- \u00a0])?{DIG}{{1,4}}(?:\\\\?/|\u2044){DIG}{{1,4}}"
    DATE = f"{DIG}{{1,2}}[-/]{DIG}{{1,2}}[-/]{DIG}{{2,4}}"
    SUBSUPNUM = (
        "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
    )
    MISCSYMBOL = (
        "[\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0"
        "\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d"
        "\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u2020-\u2023\u2032-\u2038\u2044\u207a-\u207f"
        "\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff\u2600-\u26ff\u3012"
        "\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
    )
    QUOTES = (
        "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a"
        f"\u00ab\u00bb]{{1,2}}|''|{APOS}"
    )
    DBLQUOT = '(?:"|&quot;)'
    XN = "[A-Za-z][A-Za-z0-9_:.-]*"
    SGML = (
        f"<(?:[!?][A-Za-z-][^>\\r\\n]*|{XN}(?: +(?:{XN} *= *(?:'[^']*'|\"[^\"]*\"|{XN})|{XN}))* */?"
        f"|/{XN}) *>"
    )
    SENTEND = f"{SPNL}(?:{SPNL}|[A-Z]|<[/A-Za-z!])"
    # An acronym's period is also a sentence end before these capitalized words.
    ACRO_SENTEND = (
        f"{SPNL}+(?:A(?i:bout|ccording|dditionally|fter|n|s|t)?|B(?i:ut)|E(?i:arlier)"
        "|H(?i:e|er|ere|owever)|I(?i:f|n|t)|L(?i:ast)|M(?i:any|ore|r\\.|s\\.)|N(?i:ow)"
        "|O(?i:nce|ne|ther|ur)|S(?i:he|ince|o|ome|uch)|T(?i:hat|he|hen|here|hese|hey|his)"
        f"|W(?i:e|hen|hile|hat)|Y(?i:et|ou)|{SGML}){SPNL}"
    )
    SMILEY = r"[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]]"
    same = None

    # (pattern, trailing context, action, pushback, first characters): pushback > 0 gives
    # back that many characters (cannot -> can + not); -1 keeps a final period on the token
    # and reads it again (a sentence end after an abbreviation). First characters: a = ASCII
    # letter, d = ASCII digit, o = anything else; used only to skip rules that cannot match.
    rules = [
        ("(?i:cannot)", None, same, 3, "a"),
        (f"{APOS}(?i:twas)", None, same, 3, "o"),
        (f"{APOS}(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna)", None, same, 2, "ao"),
        (SGML, None, _nbsp, 0, "o"),
        ("&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, _const("--"), 0, "o"),
        ("(?i:&amp;)", None, _const("&"), 0, "o"),
        ("&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, same, 0, "o"),
        (WORD, REDAUX, _no_soft_hyphen, 0, "ao"),
        (SWORD, SREDAUX, _no_soft_hyphen, 0, "ao"),
        (WORD, None, _no_soft_hyphen, 0, "ao"),
        (APOWORD, None, same, 0, "ao"),
        (f"(?i:y){APOS}", LET, same, 0, "a"),
        (SMILEY, "[^A-Za-z0-9]", _parens, 0, "o"),
        (FULLURL, None, same, 0, "a"),
        (LIKELYURL, None, same, 0, "ado"),
        (EMAIL, None, same, 0, "ado"),
        (f"#{LET}+", None, same, 0, "o"),
        ("@[A-Za-z_][A-Za-z_0-9]*", None, same, 0, "o"),
        (REDAUX, "[^A-Za-z]", _right_quote, 0, "o"),
        (SREDAUX, None, _right_quote, 0, "a"),
        (DATE, None, same, 0, "do"),
        (NUMBER, None, _no_soft_hyphen, 0, "do"),
        (SUBSUPNUM, None, same, 0, "o"),
        (FRAC, None, _nbsp, 0, "do"),
        ("[\u00bc\u00bd\u00be\u2153-\u215e]", None, lambda t: _FRACTIONS.get(t, t), 0, "o"),
        (
            f"-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500"
            f"|S(?:&|&amp;)Ls|Cap{APOS}n|c{APOS}est)",
            None,
            _no_amp_entity,
            0,
            "ao",
        ),
        (THING3, None, same, 0, "ad"),
        (r"[A-Z]*\$|#", None, same, 0, "ao"),
        (
            "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
            None,
            _currency,
            0,
            "o",
        ),
        (ABBREV1, SENTEND, same, -1, "a"),
        (ABBREV1, "(?s:..)", same, 0, "a"),  # two chars of context: beats "Jr.a" as a WORD
        (ABBREV1, None, same, 0, "a"),
        (f"(?:{ACRO})\\.", ACRO_SENTEND, same, -1, "a"),
        ("[A-Za-z]\\.", ACRO_SENTEND, same, 1, "a"),  # "says A. The": the letter loses its period
        (ABBREV3, f"{SPNL}?{DIG}", same, 0, "a"),
        (f"{ABBREV4}\\.", None, same, 0, "a"),
        (ABBREV4, SPACE, same, 0, "a"),
        (ACRO, SPNL, same, 0, "a"),
        (f"{APOS}[0-9][0-9]", SPNL, same, 0, "o"),
        (f"{WORD}\\.", "[,;:]", _no_soft_hyphen, 0, "ao"),
        (PHONE, None, lambda t: _parens(_nbsp(t)), 0, "do"),
        (DBLQUOT, "[A-Za-z0-9$]", _left_quote, 0, "o"),
        (DBLQUOT, None, _right_quote, 0, "o"),
        (r"[+%&\u2030\u2031~^|\\]", None, same, 0, "o"),
        ("&lt;", None, _const("<"), 0, "o"),
        ("&gt;", None, _const(">"), 0, "o"),
        (r"\[", None, _const("-LSB-"), 0, "o"),
        (r"\]", None, _const("-RSB-"), 0, "o"),
        (r"\{", None, _const("-LCB-"), 0, "o"),
        (r"\}", None, _const("-RCB-"), 0, "o"),
        (r"\(", None, _const("-LRB-"), 0, "o"),
        (r"\)", None, _const("-RRB-"), 0, "o"),
        ("<<|>>", None, same, 0, "o"),
        ("[<>]", None, same, 0, "o"),
        ("-+", None, lambda t: "--" if 2 <= len(t) <= 4 else t, 0, "o"),
        (r"\.\.\.+|\.[ \u00a0](?:\.[ \u00a0])+\.|[\u0085\u2026]", None, _const("..."), 0, "o"),
        ("@+|#+|_+", None, same, 0, "o"),
        (r"\*+|(?:\\\*){1,3}", None, same, 0, "o"),
        ("[,;:]", None, same, 0, "o"),
        ("[?!]+", None, same, 0, "o"),
        ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]", None, same, 0, "o"),
        ("[=/]", None, same, 0, "o"),
        (f"{HTHING}\\.", "[,;:]", _no_soft_hyphen, 0, "ad"),
        (HTHING, None, _no_soft_hyphen, 0, "ad"),
        (f"{THING}\\.", "[,;:]", same, 0, "ado"),
        (THING, None, same, 0, "ado"),
        (f"{THINGA}\\.", "[,;:]", _no_amp_entity, 0, "a"),
        (THINGA, None, _no_amp_entity, 0, "a"),
        ("'", "[A-Za-z][^ \t\n\r\u00a0]", _left_quote, 0, "o"),
        (REDAUX, None, _right_quote, 0, "o"),
        (QUOTES, None, _right_quote, 0, "o"),
        (MISCSYMBOL, None, same, 0, "o"),
    ]
    by_start: dict[str, list] = {"a": [], "d": [], "o": []}
    for pat, ctx, act, push, starts in rules:
        rx = re.compile(f"(?P<tok>{pat})" + (f"(?=(?P<ctx>{ctx}))" if ctx else ""))
        for key in starts:
            by_start[key].append((rx, act, push, ctx is not None))
    skip = re.compile("[ \t\u00a0\u2000-\u200a\u3000\u200b\u200e\u200f\ufeff\x00]+|&nbsp;")
    # Fast path: an ASCII word followed by a space or the line end is always a WORD (unless
    # it is one of the split forms).
    fast = re.compile(r"[A-Za-z]+(?=[ \t\n])")
    # ...and so is one before a final period, unless the period could belong to it.
    fast_dot = re.compile(r"[A-Za-z]{2,}(?=\.[ \t\n])")
    maybe_abbrev = re.compile(f"(?i:{ABBREV1}|{ABBREV4}\\.|{ABBREV3})")
    return by_start, skip, re.compile(f"{fast.pattern}|{fast_dot.pattern}"), maybe_abbrev


_SPLIT_FORMS = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})
# Runs of plain ASCII words, each followed by spaces, are taken in one regex call.
_WORD_RUN = re.compile(r"(?:[A-Za-z]+[ \t]+)+")
_HAS_SPLIT_FORM = re.compile(r"(?i)\b(?:cannot|gonna|gotta|lemme|gimme|wanna)\b")
# Sentence punctuation before a space is a token of its own (". ." is an ellipsis, though).
_PUNCT_BEFORE_SPACE = re.compile(r"[,;:](?=[ \t\n])|\.(?=[\t\n]| (?!\.))")


def ptb_tokenize_lines(lines: Sequence[str]) -> list[list[str]]:
    """PTB tokens of each line, as CoreNLP 3.4.1 ``PTBTokenizer -preserveLines`` gives them.

    The lines are lexed as one text joined by newlines, like the Java tool reads its file:
    a few rules look past the end of a line ("Jr." before a capital on the next line).
    Tokens keep their case; nothing is dropped.
    """
    by_start, skip, fast, maybe_abbrev = _lexer()
    text = "\n".join(_clean(s) for s in lines) + "\n"
    out: list[list[str]] = [[] for _ in lines]
    row: list[str] = out[0] if out else []
    index, pos, end = 0, 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch == "\n":
            index += 1
            if index < len(out):
                row = out[index]
            pos += 1
            continue
        m = skip.match(text, pos)
        if m:
            pos = m.end()
            continue
        m = _WORD_RUN.match(text, pos)
        if m and not _HAS_SPLIT_FORM.search(m.group()):
            row.extend(m.group().split())
            pos = m.end()
            continue
        m = _PUNCT_BEFORE_SPACE.match(text, pos)
        if m:
            row.append(m.group())
            pos += 1
            continue
        m = fast.match(text, pos)
        if m:
            word = m.group()
            if word.lower() not in _SPLIT_FORMS and (
                text[m.end()] != "." or not maybe_abbrev.fullmatch(word + ".")
            ):
                row.append(word)
                pos = m.end()
                continue
        key = (
            "a" if ch.isascii() and ch.isalpha() else "d" if ch.isascii() and ch.isdigit() else "o"
        )
        best_len, best = 0, None
        for rx, act, push, has_ctx in by_start[key]:
            m = rx.match(text, pos)
            if m is None:
                continue
            n = m.end("tok") - pos + (len(m.group("ctx")) if has_ctx else 0)
            if n > best_len:
                best_len, best = n, (m, act, push)
        if best is None:
            pos += 1  # an untokenizable character: deleted, as PTBTokenizer does by default
            continue
        m, act, push = best
        tok = m.group("tok")
        used = len(tok)
        if push > 0:
            tok = tok[:-push]
            used = len(tok)
        elif push < 0:
            used += push
        row.append(tok if act is None else act(tok))
        pos += used
    return out


def tokenize_python(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's tokenization without Java: PTB tokens, lower-cased, punctuation dropped."""
    return [
        _drop_punctuation(" ".join(t.lower() for t in toks))
        for toks in ptb_tokenize_lines(list(captions))
    ]


# ------------------------------------------------------------------------------- scoring


def _resolve_tokenizer(tokenizer: str) -> str:
    if tokenizer not in ("auto", "java", "python"):
        raise UserError(f"unknown tokenizer {tokenizer!r}: use auto, java or python")
    if tokenizer == "auto":
        return "java" if java_available() else "python"
    if tokenizer == "java" and not java_available():
        raise UserError(
            "tokenizer 'java' needs a working `java` on PATH (Java 8+) and pycocoevalcap's jars; "
            "use --tokenizer python (METEOR is then unavailable)"
        )
    return tokenizer


def _select_metrics(metrics: Iterable[str] | None) -> list[str]:
    """Result keys to report, in pycocoevalcap's order, from names like "bleu" or "CIDEr"."""
    if metrics is None:
        return list(METRIC_KEYS)
    if isinstance(metrics, str):
        metrics = [metrics]
    aliases = {k.lower(): (k,) for k in METRIC_KEYS}
    aliases.update({g.lower(): keys for g, keys in METRICS.items()})
    aliases.update({"rouge": ("ROUGE_L",), "cider-d": ("CIDEr",), "cider_d": ("CIDEr",)})
    wanted: set[str] = set()
    for name in metrics:
        keys = aliases.get(str(name).lower())
        if keys is None:
            raise UserError(f"unknown metric {name!r}: choose from {', '.join(METRICS)}")
        wanted.update(keys)
    return [k for k in METRIC_KEYS if k in wanted]


def _describe_ids(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:5])
    return f"{shown}{', ...' if len(ids) > 5 else ''}"


def check_same_images(refs: Mapping[Any, Any], preds: Mapping[Any, Any]) -> None:
    """Refuse (UserError) predictions and references that cover different images.

    The message names the count and the first few ids missing on each side.
    """
    no_refs = [k for k in preds if k not in refs]
    no_pred = [k for k in refs if k not in preds]
    if not no_refs and not no_pred:
        return
    parts = []
    if no_refs:
        parts.append(
            f"{len(no_refs)} predicted image(s) have no references: {_describe_ids(no_refs)}"
        )
    if no_pred:
        parts.append(
            f"{len(no_pred)} referenced image(s) have no prediction: {_describe_ids(no_pred)}"
        )
    raise UserError("predictions and references cover different images; " + "; ".join(parts))


def _check_refs(refs: Mapping[Any, Sequence[str]], min_refs: int = 1) -> None:
    if not refs:
        raise UserError("no images to score")
    for key, caps in refs.items():
        if isinstance(caps, str) or not all(isinstance(c, str) for c in caps):
            raise UserError(f"references of image {key!r} must be a list of strings")
        if len(caps) < min_refs:
            raise UserError(
                f"image {key!r} has {len(caps)} reference(s); this needs at least {min_refs}"
            )


def _tokenize_all(
    refs: Mapping[Any, Sequence[str]], preds: Mapping[Any, str] | None, tokenizer: str
) -> tuple[dict[Any, list[str]], dict[Any, str], str]:
    """Tokenize every reference and prediction in one pass (one JVM start for Java).

    Returns the tokenized references and predictions and the tokenizer that ran: with
    "auto", a Java failure falls back to the Python tokenizer (with a warning) rather than
    ending, say, a training run's evaluation.
    """
    kind = _resolve_tokenizer(tokenizer)
    keys = list(refs)
    flat = [c for k in keys for c in refs[k]]
    if preds is not None:
        flat += [preds[k] for k in keys]
    if kind == "java":
        try:
            tokens = tokenize_java(flat)
        except (OSError, RuntimeError, UnicodeDecodeError) as err:
            if tokenizer == "java":
                raise
            warnings.warn(f"Java PTBTokenizer failed, using the Python one: {err}", stacklevel=3)
            kind = "python"
    if kind == "python":
        tokens = tokenize_python(flat)
    tok_refs: dict[Any, list[str]] = {}
    i = 0
    for k in keys:
        tok_refs[k] = tokens[i : i + len(refs[k])]
        i += len(refs[k])
    tok_preds = dict(zip(keys, tokens[i:], strict=True)) if preds is not None else {}
    return tok_refs, tok_preds, kind


def _score_tokenized(
    gts: dict[Any, list[str]], res: dict[Any, list[str]], keys: list[str], java: bool
) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Corpus and per-image scores of the wanted keys with pycocoevalcap's scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    corpus: dict[str, float | None] = {}
    per_image: dict[str, list[float]] = {}
    if any(k.startswith("Bleu") for k in keys):
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n, name in enumerate(METRICS["Bleu"]):
            if name in keys:
                corpus[name], per_image[name] = float(score[n]), [float(s) for s in scores[n]]
    if "METEOR" in keys:
        corpus["METEOR"] = None
        if java:
            try:
                score, scores = _get_meteor().compute_score(gts, res)
                corpus["METEOR"], per_image["METEOR"] = score, scores
            except (OSError, RuntimeError, ValueError) as err:
                # A dead or confused JVM (out of memory, say) costs METEOR, not the run.
                close_meteor()
                warnings.warn(f"METEOR failed and is left out: {err}", stacklevel=3)
    if "ROUGE_L" in keys:
        score, scores = Rouge().compute_score(gts, res)
        corpus["ROUGE_L"], per_image["ROUGE_L"] = float(score), [float(s) for s in scores]
    if "CIDEr" in keys:
        score, scores = Cider().compute_score(gts, res)
        corpus["CIDEr"], per_image["CIDEr"] = float(score), [float(s) for s in scores]
    return {k: corpus[k] for k in keys}, per_image


def score_captions(
    refs: Mapping[ImageId, Sequence[str]],
    preds: Mapping[ImageId, str],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Score one predicted caption per image against its references (pycocoevalcap numbers).

    Args:
        refs: image id -> reference captions.
        preds: image id -> predicted caption; must cover exactly the images of ``refs``.
        tokenizer: "java" (CoreNLP, as pycocoevalcap), "python" (the Java-free copy; no
            METEOR) or "auto" (Java when it is there).
        metrics: names to compute ("Bleu", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", any case);
            all by default.
        per_image: also return ``"per_image": {metric: {image id: score}}``.

    Returns:
        ``{"Bleu_1": .., "Bleu_2": .., "Bleu_3": .., "Bleu_4": .., "METEOR": .. or None,
        "ROUGE_L": .., "CIDEr": .., "tokenizer": "ptb-java" | "ptb-python",
        "meteor_available": bool, "images": n}``.
    """
    keys = _select_metrics(metrics)
    _check_refs(refs)
    check_same_images(refs, preds)
    for k, p in preds.items():
        if not isinstance(p, str):
            raise UserError(f"prediction for image {k!r} must be a string, not {type(p).__name__}")
    gts, tok_preds, kind = _tokenize_all(refs, preds, tokenizer)
    res = {k: [tok_preds[k]] for k in gts}
    corpus, scores = _score_tokenized(gts, res, keys, kind == "java")
    out: dict[str, Any] = dict(corpus)
    meteor_ok = kind == "java" and ("METEOR" not in keys or corpus["METEOR"] is not None)
    out.update(tokenizer=f"ptb-{kind}", meteor_available=meteor_ok, images=len(gts))
    if per_image:
        ids = list(gts)
        out["per_image"] = {m: dict(zip(ids, v, strict=True)) for m, v in scores.items()}
    return out


def _folds(refs: Mapping[Any, Sequence[str]]) -> int:
    return min(len(caps) for caps in refs.values())


def _fold_average(
    tok_refs: dict[Any, list[str]],
    hypothesis: Callable[[Any, int], str],
    keys: list[str],
    kind: str,
) -> dict[str, Any]:
    """Average over folds k of the scores of hypothesis(id, k) against refs without ref k."""
    folds = _folds(tok_refs)
    per_fold = []
    for k in range(folds):
        gts = {i: caps[:k] + caps[k + 1 :] for i, caps in tok_refs.items()}
        res = {i: [hypothesis(i, k)] for i in tok_refs}
        per_fold.append(_score_tokenized(gts, res, keys, kind == "java")[0])
    out: dict[str, Any] = {}
    for key in keys:
        values = [f[key] for f in per_fold]
        out[key] = None if any(v is None for v in values) else sum(values) / folds
    out.update(
        tokenizer=f"ptb-{kind}",
        meteor_available=kind == "java" and ("METEOR" not in keys or out["METEOR"] is not None),
        images=len(tok_refs),
        folds=folds,
        per_fold=per_fold,
    )
    return out


def reference_agreement(
    refs: Mapping[ImageId, Sequence[str]],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
) -> dict[str, Any]:
    """How well the references agree with each other: the ceiling for a captioner.

    For k = 1..K (K = the smallest number of references of any image, 5 for Flickr/COCO),
    reference k of every image is scored as the prediction against that image's other
    references; the result is the average over k of each corpus metric. Same keys as
    :func:`score_captions`, plus ``"folds"`` (K) and ``"per_fold"``.
    """
    keys = _select_metrics(metrics)
    _check_refs(refs, min_refs=2)
    tok_refs, _, kind = _tokenize_all(refs, None, tokenizer)
    return _fold_average(tok_refs, lambda i, k: tok_refs[i][k], keys, kind)


def leave_one_out_scores(
    refs: Mapping[ImageId, Sequence[str]],
    preds: Mapping[ImageId, str],
    tokenizer: str = "auto",
    metrics: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The prediction scored against the same reference sets as :func:`reference_agreement`.

    For each k the prediction is scored against the references other than k (the four that
    reference k was scored against), and the scores are averaged over k: directly
    comparable with the agreement, unlike :func:`score_captions` (which uses all references
    and so gives higher numbers).
    """
    keys = _select_metrics(metrics)
    _check_refs(refs, min_refs=2)
    check_same_images(refs, preds)
    tok_refs, tok_preds, kind = _tokenize_all(refs, preds, tokenizer)
    return _fold_average(tok_refs, lambda i, k: tok_preds[i], keys, kind)


# ------------------------------------------------------------------------------- loading


def canonical_id(value: Any) -> ImageId:
    """Image ids as the COCO results format allows them: ints stay ints, digit strings
    ("391895") become ints, any other string (a Flickr file stem) stays a string."""
    if isinstance(value, bool):
        raise UserError(f"bad image id {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit() and s.isascii() and str(int(s)) == s:
            return int(s)
        if s:
            return s
    raise UserError(f"bad image id {value!r}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _flickr_token_refs(path: Path) -> dict[ImageId, list[str]]:
    refs: dict[ImageId, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        if not sep:
            raise UserError(f"{path}:{n}: expected 'IMAGE#K<TAB>caption'")
        name = key.rsplit("#", 1)[0].strip()
        refs.setdefault(canonical_id(Path(name).stem), []).append(caption.strip())
    return refs


def load_refs(path: str | os.PathLike, split: str | None = None) -> dict[ImageId, list[str]]:
    """References from a COCO captions JSON, a Karpathy split JSON or a Flickr ``*.token`` file.

    Image ids (the keys) follow the project's loaders (:mod:`mlx_caption.data.sources`), so
    ``mlx-caption eval`` predictions match them:

    * COCO (``{"images", "annotations"}``): the annotations' ``image_id``.
    * Karpathy (``{"images": [{"sentences", "split", ...}]}``): ``cocoid`` when present
      (COCO), else ``imgid`` (Flickr8k/30k), else the image's position in the file.
      ``split`` keeps only that split ("train" also takes "restval"; "dev"/"validation"
      mean "val").
    * Flickr ``IMAGE.jpg#K<TAB>caption`` lines: the file name without extension.

    Digit-string ids become ints (:func:`canonical_id`), as the COCO results format allows
    either. Images without captions are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"references not found: {path}")
    if path.suffix.lower() != ".json":
        if split is not None:
            raise UserError(f"{path}: --split applies to Karpathy JSON files only")
        try:
            return _flickr_token_refs(path)
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read {path}: {err}") from None
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path}: neither COCO captions nor Karpathy JSON (no 'images' list)")
    refs: dict[ImageId, list[str]] = {}
    if "annotations" in data:
        if split is not None:
            raise UserError(f"{path}: COCO captions files have no splits; drop --split")
        for a in data["annotations"]:
            if (
                not isinstance(a, dict)
                or "image_id" not in a
                or not isinstance(a.get("caption"), str)
            ):
                raise UserError(f"{path}: bad annotation {str(a)[:80]}")
            refs.setdefault(canonical_id(a["image_id"]), []).append(a["caption"].strip())
        return refs
    wanted = _split_names(split)
    seen_splits: set[str] = set()
    for pos, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise UserError(f"{path}: bad image entry {str(img)[:80]}")
        img_split = str(img.get("split", ""))
        seen_splits.add(img_split)
        if wanted is not None and img_split.lower() not in wanted:
            continue
        caps = [
            (s.get("raw") or " ".join(s.get("tokens", []))).strip()
            for s in img.get("sentences", [])
            if isinstance(s, dict)
        ]
        caps = [c for c in caps if c]
        if caps:
            raw_id = img.get("cocoid", img.get("imgid", pos))
            refs.setdefault(canonical_id(raw_id), []).extend(caps)
    if wanted is not None and not refs:
        known = ", ".join(sorted(s for s in seen_splits if s)) or "none"
        raise UserError(f"{path}: no images in split {split!r} (splits: {known})")
    return refs


def _split_names(split: str | None) -> set[str] | None:
    if split is None:
        return None
    name = split.strip().lower()
    if name in ("dev", "validation", "valid"):
        return {"val", "dev", "validation"}
    if name == "train":
        return {"train", "restval"}
    return {name}


def load_preds(path: str | os.PathLike) -> dict[ImageId, str]:
    """Predictions from a COCO results JSON: ``[{"image_id": .., "caption": ".."}, ...]``.

    An image predicted twice is refused (COCO's own loader would silently score both).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of {{'image_id', 'caption'}} (COCO results)")
    preds: dict[ImageId, str] = {}
    dupes: list[ImageId] = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
            raise UserError(f"{path}: entry {n} lacks 'image_id' or 'caption': {str(item)[:80]}")
        if not isinstance(item["caption"], str):
            raise UserError(f"{path}: entry {n}: caption must be a string")
        key = canonical_id(item["image_id"])
        if key in preds:
            dupes.append(key)
        preds[key] = item["caption"]
    if dupes:
        raise UserError(
            f"{path}: {len(dupes)} image(s) have more than one caption "
            f"(e.g. {_describe_ids(dupes)}); keep one prediction per image"
        )
    return preds
