#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_cases.txt: GPT-2 BPE encodings of tricky strings, computed by an
implementation independent of datasets/bpe_tokenizer.cpp, for tests/datasets/test_tokenizer.cpp.

The reference follows GPT-2's original encoder: the pre-tokenisation regex run by the `regex`
module (pip install regex), bytes_to_unicode, and merges of the lowest-ranked pair at every
occurrence per round. Inputs are byte strings: invalid UTF-8 is decoded with surrogateescape,
so each bad byte becomes one code point U+DC80..U+DCFF of category Cs (neither letter, number nor
space), which is what the C++ tokenizer does with such bytes.

The `regex` module may use a newer Unicode version than Python's unicodedata, from which
scripts/gen_unicode_tables.py builds the C++ tables; every case is checked to use only code
points on which the two agree.

Usage (from the repository root):
    python3 scripts/tokenizer_fixture.py tests/fixtures/gpt2-bpe > tests/fixtures/tokenizer_cases.txt

Format: '#' lines are comments; each case is a line "# name" followed by a line
"<input bytes as hex>\\t<token ids separated by spaces>".
"""
import json
import os
import random
import sys
import unicodedata

import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

WHITE_SPACE = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000}


def byte_to_char():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
                 list(range(0xAE, 0x100)))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Reference:
    def __init__(self, tokdir):
        with open(os.path.join(tokdir, "encoder.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(os.path.join(tokdir, "vocab.bpe"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(l.split(" ")) for l in lines[1:] if l]
        self.rank = {m: i for i, m in enumerate(merges)}
        self.b2c = byte_to_char()
        self.memo = {}

    def bpe(self, word):
        if word in self.memo:
            return self.memo[word]
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.rank[p], p) for p in zip(parts, parts[1:]) if p in self.rank]
            if not ranked:
                break
            _, (a, b) = min(ranked)
            merged = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.memo[word] = parts
        return parts

    def encode(self, data: bytes):
        text = data.decode("utf-8", errors="surrogateescape")
        ids = []
        for piece in PATTERN.findall(text):
            raw = piece.encode("utf-8", errors="surrogateescape")
            mapped = "".join(self.b2c[b] for b in raw)
            ids.extend(self.vocab[t] for t in self.bpe(mapped))
        return ids


def check_classes(data: bytes, name):
    """The C++ tables (unicodedata) and `regex` must agree on every code point of a case."""
    for ch in data.decode("utf-8", errors="surrogateescape"):
        cp = ord(ch)
        cat = unicodedata.category(ch)
        ours = (cat in ("Lu", "Ll", "Lt", "Lm", "Lo"), cat in ("Nd", "Nl", "No"), cp in WHITE_SPACE)
        theirs = (bool(regex.match(r"\p{L}", ch)), bool(regex.match(r"\p{N}", ch)),
                  bool(regex.match(r"\s", ch)))
        if 0xDC80 <= cp <= 0xDCFF:
            continue  # an escaped invalid byte
        if ours != theirs:
            sys.exit(f"case {name!r}: U+{cp:04X} is classed differently by unicodedata "
                     f"{unicodedata.unidata_version} and regex; pick another character")


def cases():
    c = [
        ("known: Hello world", "Hello world"),
        ("known: leading space", " Hello"),
        ("empty", ""),
        ("one space", " "),
        ("two spaces", "  "),
        ("two spaces between words", "a  b"),
        ("three spaces between words", "a   b"),
        ("newlines before a word", "\n\n\nx"),
        ("newlines at the end", "x\n\n\n"),
        ("trailing spaces", "trailing spaces   "),
        ("tabs", "\ttab\tseparated\t\tvalues\t"),
        ("space tab word", "a \tb"),
        ("space newline space word", " \n x"),
        ("CRLF", "line1\r\nline2\r\n"),
        ("no-break space", "x\u00a0nbsp \u00a0y"),
        ("ideographic space", "x\u3000y\u3000 z"),
        ("line separator", "a\u2028b\u2029"),
        ("vertical tab and form feed", "a\x0b\x0cb"),
        ("information separators are not \\s", "a\x1cb\x1f c"),
        ("control characters", "\x00\x01\x02 \x7f"),
        ("contraction I'm", "I'm"),
        ("contraction don't", "don't"),
        ("uppercase is no contraction", "they'LL"),
        ("contractions", "we've they're she'd it's I'll you'd"),
        ("contraction at start", "'s"),
        ("quotes before s", "''s 'S '"),
        ("apostrophes inside words", "rock'n'roll o'clock"),
        ("right single quote", "it\u2019s"),
        ("space before apostrophe s", "x 's"),
        ("digits", "12345"),
        ("decimal", "3.14"),
        ("grouped number", "1,000,000 and 2024-01-01"),
        ("digits and letters", "abc123def 4x4"),
        ("Arabic-Indic digits", "\u0663\u0664\u0665 \u0661"),
        ("roman numeral Nl", "\u216b chapter"),
        ("fractions and superscripts No", "\u00bd \u00b2 x\u00b3"),
        ("emoji", "\U0001F600"),
        ("emoji with modifiers and ZWJ", "\U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469\u200d\U0001F467"),
        ("emoji with variation selector", "I \u2764\ufe0f NY"),
        ("Japanese", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"),
        ("Chinese", "\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\u3002"),
        ("Korean", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
        ("accented Latin", "caf\u00e9 na\u00efve fa\u00e7ade \u00c5ngstr\u00f6m"),
        ("combining accent", "cafe\u0301 re\u0301sume\u0301"),
        ("Cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!"),
        ("Greek", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5"),
        ("Hebrew", "\u05e9\u05dc\u05d5\u05dd"),
        ("Arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"),
        ("Devanagari with marks", "\u0939\u093f\u0928\u094d\u0926\u0940"),
        ("Thai", "\u0e44\u0e17\u0e22"),
        ("mixed scripts", "English \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u4e2d\u6587 \u0639\u0631\u0628\u064a 123"),
        ("endoftext as text", "<|endoftext|>"),
        ("endoftext between words", "Hello<|endoftext|>world <|endoftext|>"),
        ("code", "def f(x):\n    return x**2  # square\n"),
        ("json", "{\"key\": [1, 2, 3], \"v\": null}"),
        ("url", "https://example.com/path?q=1&r=2#frag"),
        ("noncharacter and last code point", "a\uffffb\U0010ffff"),
        ("private use", "\ue000x"),
        ("long word of one letter", "a" * 100),
        ("long alternating word", "ab" * 60),
        ("long real word", " Supercalifragilisticexpialidocious" * 2 + "Supercalifragilisticexpialidocious" * 3),
        ("long punctuation run", "!" * 80 + "?" * 7),
        ("long number", "1234567890" * 8),
        ("long whitespace run", " " * 70 + "x" + "\n" * 60),
        ("long CJK run", "\u6f22\u5b57" * 40),
    ]
    out = [(name, s.encode("utf-8")) for name, s in c]
    out += [
        ("invalid: lone 0xFF", b"\xff"),
        ("invalid: continuation byte inside a word", b"abc\x80def"),
        ("invalid: truncated sequence at the end", b"x \xe2\x82"),
        ("invalid: truncated sequence before a letter", b"\xe2\x82A b"),
        ("invalid: encoded surrogate", b"\xed\xa0\x80 ok"),
        ("invalid: overlong slash", b"\xc0\xaf"),
        ("invalid: above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("invalid: after a space", b" \xff\xfe word"),
        ("invalid: Latin-1 text", b"caf\xe9 na\xefve"),
        ("invalid: between spaces", b"a \x80 b\x80"),
    ]
    # Random mixtures of everything above (fixed seed).
    rng = random.Random(1234)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
            list("     \n\n\t'.,!?-_()[]{}<|>\"") + ["'s", "'t", "'re", "'LL", "\r\n", "\u00a0",
            "\u3000", "\u00e9", "\u00fc", "\u00df", "\u0436", "\u03bb", "\u4e2d", "\u6587", "\u3042",
            "\ud55c", "\u0663", "\u00bd", "\u216b", "\U0001F600", "\u2764\ufe0f", "\u0301", "\u2019"])
    for i in range(24):
        parts = []
        for _ in range(rng.randint(20, 200)):
            if rng.random() < 0.04:
                parts.append(bytes([rng.randint(0x80, 0xFF)]))
            else:
                parts.append(rng.choice(pool).encode("utf-8"))
        out.append((f"random mixture {i}", b"".join(parts)))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ref = Reference(sys.argv[1])
    lines = ["# GPT-2 BPE encodings for tests/datasets/test_tokenizer.cpp.",
             "# Generated by scripts/tokenizer_fixture.py (regex " + regex.__version__ +
             ", unicodedata " + unicodedata.unidata_version + "); do not edit.",
             "# Each case: '# name', then '<input bytes as hex><TAB><ids separated by spaces>'."]
    for name, data in cases():
        check_classes(data, name)
        ids = ref.encode(data)
        lines.append("# " + name)
        lines.append(data.hex() + "\t" + " ".join(map(str, ids)))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
