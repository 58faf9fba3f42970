"""What pycocoevalcap does around the PTB tokenizer, shared by the Java and Python tokenizers.

Its ``PTBTokenizer`` wrapper writes one caption per line, runs CoreNLP's ``PTBTokenizer
-preserveLines -lowerCase`` over the file and drops punctuation tokens from each output line.
"""

from __future__ import annotations

import re

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


def one_line(caption: str) -> str:
    """The caption with every character that would end a line replaced by a space."""
    return _LINE_BREAKS.sub(" ", caption)


def drop_punctuation(line: str) -> str:
    """Exactly pycocoevalcap's post-processing of one tokenizer output line."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
