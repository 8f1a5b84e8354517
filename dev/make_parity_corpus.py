#!/usr/bin/env python3
"""Builds the tokenizer parity corpus (dev/tokenizer_parity.py reads it).

    python3 dev/make_parity_corpus.py OUTDIR [--fortunes /usr/share/games/fortunes]

Writes into OUTDIR:
  corpus.txt      every fortunes file (Debian's fortunes, fortunes-zh, -de, -it,
                  -es, -ru, -cs, -pl, -bg: many languages, some not UTF-8), then
                  test/data/tokenizer/hard_cases.txt, then seeded random lines
                  mixing the characters that break tokenizers
  codepoints.txt  every Unicode scalar value, 16 a line, alone and inside a word
Nothing is downloaded; the output is the same on every run.
"""
import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HARD_CASES = os.path.join(HERE, "..", "test", "data", "tokenizer", "hard_cases.txt")

# Pieces for the random lines: each is a string, drawn with replacement.
PIECES = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 4
    + list(" " * 30 + "\t.,;:!?'\"()[]{}<>#@$%^&*-_=+/\\|~`")
    + ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[mask]", "[MASK", "MASK]", "##", "###"]
    + [chr(c) for c in (0x0301, 0x0300, 0x0308, 0x0323, 0x0316, 0x0327, 0x302E, 0x302F,
                        0x1734, 0x1D165, 0x1D16D, 0x0F71, 0x05B0, 0x064B, 0x0E31, 0x093F,
                        0x200B, 0x200D, 0xFEFF, 0x00AD, 0x0085, 0x00A0, 0x3000, 0x2028,
                        0x0000, 0x0001, 0x000B, 0x001F, 0x007F, 0xFFFD, 0xE000, 0x10FFFF)]
    + list("éèêëàâäôöûüçñåøæœßÉÈÀÖÜÇÑÅØÆŒİıŞşĞğΣσςΑΩαωЁёЖжЯя")
    + list("你好世界中文字漢字日本語한국어텍스트ภาษาไทยالعربيةעבריתहिन्दी")
    + list("ＡＢＣａｂｃ１２３！？（）ｶﾀｶﾅ😀👍🏽🇫🇷❤️ﬁﬂ㎏℃ΩÅ½²①«»„“”‘’—–…¡¿·")
    + ["e\u0301", "a\u0316\u0301", "\uac00", "\ud7a3", "\U00020000", "\uf900", "\U0002F800"]
)


def fortunes_text(root):
    """All fortunes files (not the .dat indexes), each once, in a fixed order."""
    seen, paths = set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".dat", ".u8")):
                continue
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in seen and os.path.isfile(real):
                seen.add(real)
                paths.append(real)
    chunks = []
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        chunks.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(chunks), len(paths)


def random_lines(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        line = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60)))
        data = line.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:  # some invalid UTF-8
            pos = rng.randint(0, len(data))
            data = data[:pos] + rng.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe4\xbd",
                                            b"\x80", b"\xf8\x88\x80\x80\x80"]) + data[pos:]
        out.append(data.replace(b"\n", b" "))
    return b"\n".join(out) + b"\n"


def codepoint_lines():
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000 and c != 0x0A]
    out = []
    for i in range(0, len(cps), 16):
        group = cps[i:i + 16]
        alone = " ".join(chr(c) for c in group)
        inside = " ".join("x" + chr(c) + "y" for c in group)
        out.append((alone + " | " + inside).encode("utf-8"))
    return b"\n".join(out) + b"\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--fortunes", default="/usr/share/games/fortunes")
    args = ap.parse_args()
    if not os.path.isdir(args.fortunes):
        sys.exit("%s not found: apt-get install fortunes fortunes-zh fortunes-de fortunes-it "
                 "fortunes-es fortunes-ru fortunes-cs fortunes-pl fortunes-bg" % args.fortunes)
    os.makedirs(args.outdir, exist_ok=True)
    text, n_files = fortunes_text(args.fortunes)
    with open(HARD_CASES, "rb") as f:
        hard = f.read()
    corpus = text + hard + random_lines(20000, seed=1234)
    with open(os.path.join(args.outdir, "corpus.txt"), "wb") as f:
        f.write(corpus)
    cp = codepoint_lines()
    with open(os.path.join(args.outdir, "codepoints.txt"), "wb") as f:
        f.write(cp)
    print("corpus.txt: %d fortunes files + hard cases + 20000 random lines: %d lines, %.1f MB; "
          "codepoints.txt: %d lines" % (n_files, corpus.count(b"\n"), len(corpus) / 1e6,
                                        cp.count(b"\n")))


if __name__ == "__main__":
    main()
