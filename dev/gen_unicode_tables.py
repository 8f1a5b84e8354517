#!/usr/bin/env python3
"""Generates bigsc/unicode_tables.h, the character tables of the BERT normaliser.

    python3 dev/gen_unicode_tables.py [--ucd /usr/share/unicode] [--out bigsc/unicode_tables.h]
                                      [--check-hf]

Reads the Unicode Character Database (Debian's unicode-data package) and writes,
for every code point, what Hugging Face's BertNormalizer + BertPreTokenizer
(lowercase, strip accents) do with it:

  flags  DROP  removed by clean_text: U+0000, U+FFFD and categories Cc Cf Co
               (except \\t \\n \\r, which are whitespace)
         WS    White_Space: becomes a word separator
         CJK   one of BERT's "Chinese character" ranges: a word on its own
         PUNCT ASCII symbols or a P* category: split off as its own word
         HANGUL a precomposed syllable: the tokenizer decomposes it by formula
  ccc    canonical combining class, for NFD's reordering of marks that stay
  map    lower(drop_Mn(NFD(c))), empty when c vanishes (a lone combining mark)

Which Unicode? The tokenizers package (0.23) mixes three: Rust's standard
library (White_Space, lowercase: Unicode 16.0), the unicode_categories crate
(Cc Cf Co, Mn, P*: Unicode 8.0) and unicode-normalization-alignments (NFD:
before 13.0, which added the one later decomposition, U+11938). Debian ships
one UCD (15.0), so categories, combining classes and decompositions are taken
as of 8.0 with DerivedAge.txt (a code point assigned later has no category
there) plus the few categories that changed since 8.0; and the lowercase pairs
that Unicode 16.0 added are listed below. --check-hf proves the result on every
code point.

The product holds a two-stage table (code point >> 8 -> block, block -> entry),
blocks deduplicated, so the tokenizer needs no Unicode library at run time.

--check-hf compares these tables with the installed `tokenizers` package on
every code point and prints the differences (there should be none).
"""
import argparse
import os
import sys

CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
F_DROP, F_WS, F_CJK, F_PUNCT, F_HANGUL = 1, 2, 4, 8, 16
MAX_MAP = 4  # longest lower(drop_Mn(NFD(c))); checked below

# General_Category values of Unicode 8.0 that later versions changed (seen with
# --check-hf, confirmed in the UCD history): the unicode_categories crate still
# has the old ones.
CATEGORY_8_0 = {0x166D: "Po", 0x1734: "Mn", 0x1885: "Lo", 0x1886: "Lo", 0xA9BD: "Mc",
                0x111C9: "Po"}
# Lowercase mappings new in Unicode 16.0 (Rust's char::to_lowercase has them,
# the 15.0 UCD does not): (first upper, last upper, lower - upper).
LOWER_16_0 = [(0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, 0x0264 - 0xA7CB), (0xA7CC, 0xA7CC, 1),
              (0xA7CE, 0xA7CE, 1), (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1), (0xA7DA, 0xA7DA, 1),
              (0xA7DC, 0xA7DC, 0x019B - 0xA7DC), (0x10D50, 0x10D65, 0x20), (0x16EA0, 0x16EB8, 0x1B)]

# Hangul syllables decompose algorithmically (Unicode 3.12).
S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def parse_ucd(ucd):
    """Returns category, canonical decomposition, lowercase, combining class per code point."""
    cat, decomp, lower, ccc = {}, {}, {}, {}
    first = None
    with open(os.path.join(ucd, "UnicodeData.txt"), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(";")
            cp = int(fields[0], 16)
            name = fields[1]
            if name.endswith(", First>"):
                first = cp
                continue
            if name.endswith(", Last>"):
                for c in range(first, cp + 1):
                    cat[c] = fields[2]
                continue
            cat[cp] = fields[2]
            if fields[3] != "0":
                ccc[cp] = int(fields[3])
            if fields[5] and not fields[5].startswith("<"):
                decomp[cp] = [int(x, 16) for x in fields[5].split()]
            if fields[13]:
                lower[cp] = [int(fields[13], 16)]
    # Full lowercase mappings without conditions (only U+0130 today) replace
    # the simple ones, as Rust's char::to_lowercase does.
    with open(os.path.join(ucd, "SpecialCasing.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(";")]
            if len(fields) >= 5 and fields[4]:
                continue  # conditional (Final_Sigma, language-specific)
            lower[int(fields[0], 16)] = [int(x, 16) for x in fields[1].split()]
    return cat, decomp, lower, ccc


def parse_white_space(ucd):
    ws = set()
    with open(os.path.join(ucd, "PropList.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            rng, prop = [x.strip() for x in line.split(";")]
            if prop != "White_Space":
                continue
            lo, _, hi = rng.partition("..")
            ws.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return ws


def parse_age(ucd):
    age = {}
    with open(os.path.join(ucd, "DerivedAge.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            rng, ver = [x.strip() for x in line.split(";")]
            lo, _, hi = rng.partition("..")
            major, minor = ver.split(".")
            for c in range(int(lo, 16), int(hi or lo, 16) + 1):
                age[c] = (int(major), int(minor))
    return age


def nfd(cp, decomp, age):
    if S_BASE <= cp < S_BASE + S_COUNT:
        s = cp - S_BASE
        out = [L_BASE + s // (V_COUNT * T_COUNT), V_BASE + (s % (V_COUNT * T_COUNT)) // T_COUNT]
        if s % T_COUNT:
            out.append(T_BASE + s % T_COUNT)
        return out
    if cp not in decomp or age.get(cp, (99, 0)) > (8, 0):
        return [cp]
    return [x for d in decomp[cp] for x in nfd(d, decomp, age)]


def build(ucd):
    cat, decomp, lower, ccc = parse_ucd(ucd)
    ws = parse_white_space(ucd)
    age = parse_age(ucd)
    for lo, hi, delta in LOWER_16_0:
        for cp in range(lo, hi + 1):
            lower[cp] = [cp + delta]

    def cat8(cp):
        if cp in CATEGORY_8_0:
            return CATEGORY_8_0[cp]
        return cat.get(cp, "Cn") if age.get(cp, (99, 0)) <= (8, 0) else "Cn"

    flags = [0] * 0x110000
    maps = [None] * 0x110000  # None: maps to itself
    cccs = [0] * 0x110000
    for cp in range(0x110000):
        gc = cat8(cp)
        f = 0
        if cp in (0x9, 0xA, 0xD):
            f |= F_WS
        elif cp == 0 or cp == 0xFFFD or gc in ("Cc", "Cf", "Co"):
            f |= F_DROP
        elif cp in ws:
            f |= F_WS
        if any(lo <= cp <= hi for lo, hi in CJK_RANGES):
            f |= F_CJK
        if (0x21 <= cp <= 0x2F or 0x3A <= cp <= 0x40 or 0x5B <= cp <= 0x60 or 0x7B <= cp <= 0x7E
                or gc.startswith("P")):
            f |= F_PUNCT
        if S_BASE <= cp < S_BASE + S_COUNT:
            f |= F_HANGUL
        flags[cp] = f
        if age.get(cp, (99, 0)) <= (8, 0):
            cccs[cp] = ccc.get(cp, 0)
        out = [d for d in nfd(cp, decomp, age) if cat8(d) != "Mn"]
        out = [y for x in out for y in lower.get(x, [x])]
        if out != [cp]:
            assert len(out) <= MAX_MAP, hex(cp)
            maps[cp] = out
    return flags, maps, cccs


def check_hf(flags, maps):
    """Compares with the installed tokenizers package; returns the number of differences."""
    from tokenizers import normalizers, pre_tokenizers
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                      strip_accents=None, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    bad = 0
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue  # lone surrogates cannot reach Rust; our UTF-8 decoder drops them
        c = chr(cp)
        f = flags[cp]
        m = maps[cp] if maps[cp] is not None else [cp]
        if f & F_DROP:
            want = ""
        elif f & F_WS:
            want = " "
        elif f & F_CJK:
            want = " " + "".join(map(chr, m)) + " "
        else:
            want = "".join(map(chr, m))
        got = norm.normalize_str(c)
        # The pre-tokenizer only ever sees what the normaliser kept.
        n_parts = 0 if f & F_DROP else len(pre.pre_tokenize_str("a" + c + "b"))
        want_parts = 0 if f & F_DROP else 2 if f & F_WS else 3 if f & F_PUNCT else 1
        if got != want or n_parts != want_parts:
            bad += 1
            if bad <= 30:
                print("U+%04X: hf %r / %d parts, ours %r / %d parts" %
                      (cp, got, n_parts, want, want_parts))
    print("check-hf: %d code points differ" % bad)
    return bad


def write_header(path, flags, maps, cccs):
    # One entry per distinct (flags, ccc, map); most code points share entry 0.
    # Hangul syllables keep no map (11,172 distinct ones), the C++ has the formula.
    entries, entry_index, cp_entry = [], {}, []
    for cp in range(0x110000):
        m = None if maps[cp] is None or flags[cp] & F_HANGUL else tuple(maps[cp])
        key = (flags[cp], cccs[cp], m)
        if key not in entry_index:
            entry_index[key] = len(entries)
            entries.append(key)
        cp_entry.append(entry_index[key])
    assert len(entries) < 65536
    blocks, block_index, stage1 = [], {}, []
    for b in range(0x110000 >> 8):
        blk = tuple(cp_entry[b << 8:(b + 1) << 8])
        if blk not in block_index:
            block_index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(block_index[blk])
    with open(path, "w", encoding="utf-8") as f:
        f.write("// Generated by dev/gen_unicode_tables.py from the Unicode Character Database;\n"
                "// do not edit. BERT normalisation per code point: see that script.\n"
                "#pragma once\n#include <cstdint>\n\nnamespace bigs {\nnamespace uni {\n\n")
        f.write("enum : uint8_t { kDrop = %d, kSpace = %d, kCjk = %d, kPunct = %d, kHangul = %d };\n"
                % (F_DROP, F_WS, F_CJK, F_PUNCT, F_HANGUL))
        f.write("constexpr int kMaxMap = %d;  // longest mapping, in code points\n\n" % MAX_MAP)
        f.write("// flags; canonical combining class; mapped length (kSelf: the code point\n"
                "// itself); mapped code points\n")
        f.write("constexpr uint8_t kSelf = 255;\n")
        f.write("struct Entry {\n  uint8_t flags;\n  uint8_t ccc;\n  uint8_t len;\n"
                "  uint32_t map[kMaxMap];\n};\n\n")
        f.write("constexpr int kNumEntries = %d;\n" % len(entries))
        f.write("constexpr Entry kEntries[kNumEntries] = {\n")
        for fl, cc, m in entries:
            if m is None:
                f.write("    {%d, %d, kSelf, {}},\n" % (fl, cc))
            else:
                f.write("    {%d, %d, %d, {%s}},\n" % (fl, cc, len(m), ", ".join("0x%X" % x for x in m)))
        f.write("};\n\n")
        f.write("// Stage 1: code point >> 8 -> block.\nconstexpr uint16_t kStage1[%d] = {\n"
                % len(stage1))
        for i in range(0, len(stage1), 16):
            f.write("    " + ", ".join(str(x) for x in stage1[i:i + 16]) + ",\n")
        f.write("};\n\n")
        f.write("// Stage 2: block * 256 + (code point & 255) -> entry.\n"
                "constexpr uint16_t kStage2[%d] = {\n" % (len(blocks) * 256))
        for blk in blocks:
            for i in range(0, 256, 16):
                f.write("    " + ", ".join(str(x) for x in blk[i:i + 16]) + ",\n")
        f.write("};\n\n")
        f.write("inline const Entry& lookup(uint32_t cp) {\n"
                "  return kEntries[kStage2[kStage1[cp >> 8] * 256 + (cp & 255)]];\n}\n\n")
        f.write("}  // namespace uni\n}  // namespace bigs\n")
    print("%s: %d entries, %d blocks" % (path, len(entries), len(blocks)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ucd", default="/usr/share/unicode", help="Unicode data directory")
    ap.add_argument("--out", default="bigsc/unicode_tables.h", help="header to write")
    ap.add_argument("--check-hf", action="store_true", help="compare with the tokenizers package")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.ucd, "UnicodeData.txt")):
        sys.exit("%s/UnicodeData.txt not found: apt-get install unicode-data, or pass --ucd DIR"
                 % args.ucd)
    flags, maps, cccs = build(args.ucd)
    if args.check_hf and check_hf(flags, maps):
        sys.exit(1)
    write_header(args.out, flags, maps, cccs)


if __name__ == "__main__":
    main()
