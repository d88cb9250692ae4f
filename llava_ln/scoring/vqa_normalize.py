"""VQA answer normalization: the punctuation and digit/article steps of the official VQA evaluator.

Rules (docs/scoring.md §2.2, steps 3-4) restated in code, quirks kept:
- the 21-character punctuation set; a "digit comma digit" anywhere forces deletion instead of
  spacing, and the "p next to a space" test is made on the original string;
- periods not followed by a digit are deleted, at most 32 of them (the official code passes
  re.UNICODE (= 32) as the `count` argument of `re.sub`);
- number words up to ten become digits ("none" becomes "0"); articles are dropped;
- the contraction table is generated from the canonical forms (see `build_contraction_table`).

The official evaluator ran under Python 2 with byte-string patterns, so `\\d` there matched ASCII
digits only; LLaVA's EvalAI processor runs under Python 3, where `\\d` matches any Unicode digit.
`process_punctuation(..., unicode_digits=...)` keeps that difference.
"""
import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES = frozenset(("a", "an", "the"))

# The forms the table restores (docs/scoring.md §2.2 step 4). The input keys are derived by rule.
CANONICAL_CONTRACTIONS = (
    "'ow's'at", "'twas", "I'd've", "I'm", "I've", "ain't", "aren't", "can't", "could've", "couldn't",
    "couldn't've", "didn't", "doesn't", "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd",
    "he'd've", "he's", "how'd", "how'll", "how's", "isn't", "it'd", "it'd've", "it'll", "ma'am",
    "might've", "mightn't", "mightn't've", "must've", "mustn't", "needn't", "not've", "o'clock",
    "oughtn't", "shan't", "she'd've", "should've", "shouldn't", "shouldn't've", "somebody'd've",
    "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll", "someone's",
    "something'd", "something'd've", "something'll", "that's", "there'd", "there'd've", "there're",
    "there's", "they'd", "they'd've", "they'll", "they're", "they've", "wasn't", "we'd've", "we've",
    "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've",
    "who'd", "who'd've", "who'll", "who's", "who've", "why'll", "why're", "why's", "won't",
    "would've", "wouldn't", "wouldn't've", "y'all", "y'all'd've", "y'all'll", "you'd", "you'd've",
    "you'll", "you're", "you've",
)

# The one entry of the official table that maps the wrong way round (docs/scoring.md §2.2, quirk).
BACKWARDS_ENTRIES = {"somebody'd": "somebodyd"}


def build_contraction_table(forms=CANONICAL_CONTRACTIONS) -> dict:
    """Key -> canonical form: one key per apostrophe, each missing exactly that apostrophe.

    A form with a single apostrophe thus gets the key without it ("dont" -> "don't"); a form
    with two gets two keys ("couldnt've", "couldn'tve"), never the one missing both.
    """
    table = {}
    for form in forms:
        for position, char in enumerate(form):
            if char == "'":
                table[form[:position] + form[position + 1:]] = form
    table.update(BACKWARDS_ENTRIES)
    return table


CONTRACTIONS = build_contraction_table()

_ASCII_DIGIT_COMMA = re.compile(r"[0-9],[0-9]")
_UNICODE_DIGIT_COMMA = re.compile(r"\d,\d")
_ASCII_LONE_PERIOD = re.compile(r"\.(?![0-9])")
_UNICODE_LONE_PERIOD = re.compile(r"\.(?!\d)")
_MAX_PERIODS_DELETED = 32  # the official call passes re.UNICODE (== 32) as re.sub's count


def clean_whitespace(text: str) -> str:
    """Step 1, always applied: tabs and newlines become spaces, then both ends are stripped."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str, unicode_digits: bool = False) -> str:
    """Step 3: delete or space out the punctuation set, then drop periods not before a digit."""
    digit_comma = _UNICODE_DIGIT_COMMA if unicode_digits else _ASCII_DIGIT_COMMA
    force_delete = digit_comma.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the original text, so the order of PUNCTUATION cannot matter.
        if force_delete or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    lone_period = _UNICODE_LONE_PERIOD if unicode_digits else _ASCII_LONE_PERIOD
    return lone_period.sub("", out, count=_MAX_PERIODS_DELETED)


def process_digit_article(text: str) -> str:
    """Step 4: lower-case, map number words, drop articles, restore contractions, join."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str, unicode_digits: bool = False) -> str:
    """Steps 3 and 4 together (the caller has already applied `clean_whitespace`)."""
    return process_digit_article(process_punctuation(text, unicode_digits=unicode_digits))
