"""Stanford CoreNLP 3.4.1's PTB tokenizer in pure Python, for scoring without Java.

A re-implementation of the rules of CoreNLP's PTBLexer (a JFlex scanner: at each position the
longest match wins, the earlier rule on ties, and a rule's trailing context counts towards its
length), with the options PTBTokenizer uses by default (ptb3Escaping without americanize):
clitics 's n't 're, cannot/gonna splits, hyphenated words kept whole, abbreviations and
acronyms keeping their period, numbers, fractions, quotes to `` and '', brackets to -LRB- and
friends. Written from the documented behaviour and checked token for token against the jar on
real captions (the tests compare it on Flickr8k), hand-made tricky strings and fuzzed
strings; the rare fuzzed strings that still differ are all letters glued to digits and dots,
like "3.5D.C.".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from mlx_caption.metrics.ptb import drop_punctuation, one_line


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
    """Compile the rules once, on first use (the letter class scans the whole BMP)."""
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
    text = "\n".join(one_line(s) for s in lines) + "\n"
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
        drop_punctuation(" ".join(t.lower() for t in toks))
        for toks in ptb_tokenize_lines(list(captions))
    ]
