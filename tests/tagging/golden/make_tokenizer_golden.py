"""Recipe for ``tokenizer_bert_uncased_tf4251.json``: what Tag2Text's tokenizer does to a few hundred strings.

Not a test. The reference is transformers 4.25.1's slow ``BertTokenizer`` loaded with
``from_pretrained`` (as the official ``init_tokenizer`` does; this matters: ``from_pretrained`` makes
``[CLS] [SEP] [PAD] [MASK] [UNK]`` unsplittable inside words) + ``[DEC]`` / ``[ENC]``. Run::

    PYTHONPATH=/tmp/t4251 .venv/bin/python tests/tagging/golden/make_tokenizer_golden.py BERT_DIR

with transformers 4.25.1 first on the path (see ``make_caption_golden.py``) and ``BERT_DIR`` a folder
holding bert-base-uncased ``vocab.txt`` + ``tokenizer_config.json`` (``{"do_lower_case": true}``).
Strings: random tag strings from the three shared tag lists, hand-picked Unicode corner cases and
random strings over ASCII / Latin / Greek / Cyrillic / kana / CJK / odd spaces / controls (seeded).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAM_DATA = HERE.parents[2].parent / "shared" / "ram-data" / "ram" / "data"


def strings():
    """The test strings, always the same list."""
    out = []
    tags = (RAM_DATA / "tag2text_ori_tag_list.txt").read_text(encoding="utf-8").splitlines()
    ram = (RAM_DATA / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines()
    zh = (RAM_DATA / "ram_tag_list_chinese.txt").read_text(encoding="utf-8").splitlines()
    rng = random.Random(1234)
    for _ in range(60):
        out.append(" | ".join(rng.sample(tags, rng.randint(1, 25))))
    for _ in range(20):
        out.append(" | ".join(rng.sample(ram, rng.randint(1, 8))))
    for _ in range(10):
        out.append(" | ".join(rng.sample(zh, rng.randint(1, 5))))
    out += [
        "cat | grass", "a picture of ", "", "   ", "Hello, World!", "don't stop 'til you're done",
        "Crème brûlée à la façon de Ångström", "ΣΊΣΥΦΟΣ Σίσυφος ΟΔΟΣ", "İstanbul ŞIŞLI", "straße STRASSE",
        "ﬁne ﬂour", "naïve café résumé", "日本語のテキスト 東京", "中文标签 | 猫", "한국어 텍스트", "Ελληνικά",
        "emoji 😀🐱 cat", "tab\tsep\nnew\rline", "nbsp\u00a0here\u2003em", "line\u2028sep\u2029para",
        "zero\u200bwidth", "soft\u00adhyphen", "ctl\x00\x01\x1f\x7f\x85end", "repl\ufffdchar",
        "[CLS] hi [SEP]", "[cls] lower", "x[MASK]y", "a[UNK]b [PAD]", "[DEC] a picture of", "tags [ENC] more",
        "[Dec] mixed", "a" * 99, "b" * 100, "c" * 101, "supercalifragilisticexpialidocious",
        "unaffable antidisestablishmentarianism", "3.14159 1,000,000 $5 50% #1 @home", "e-mail user@example.com",
        "C++ / C# & Java", "«quotes» „German“ ‘single’", "a—b–c…d", "¿Qué? ¡Sí!", "¼ ½ ² ³ ™ © ®",
        "ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "Ⅻ roman", "ǅ titlecase", "ﬀ ligature", "x\u0301y combining", "\u0301",
        "Zürich Köln Düsseldorf", "São Paulo", "Ærøskøbing", "Łódź", "Đà Nẵng", "Ⓐ circled",
        "mathematical 𝐀𝐁𝐂", "𠀀 ext-b", "\uf900 compat", "ゔ kana", "ㄱ jamo", "ไทย thai", "עברית", "العربية",
        "देवनागरी", "person | man | woman", "sky | cloud | tree | building | street",
        "I'm sure they've gone; we're here. It's fine, isn't it?",
    ]
    alphabet = [chr(c) for c in list(range(32, 127)) * 3 + list(range(0xa0, 0x250)) + list(range(0x370, 0x400))
                + list(range(0x3040, 0x30ff)) + list(range(0x4e00, 0x4e40)) + [0x2000, 0x2028, 0x200b, 0x3000, 0x0, 0x7f, 0x301, 0x308]]
    for _ in range(150):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))))
    return out


def main() -> None:
    import transformers
    from transformers import BertTokenizer

    assert transformers.__version__ == "4.25.1", transformers.__version__
    t = BertTokenizer.from_pretrained(sys.argv[1])
    t.add_special_tokens({"bos_token": "[DEC]"})
    t.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    cases = []
    for s in strings():
        full = t(s).input_ids
        enc40 = t([s], padding="max_length", truncation=True, max_length=40).input_ids[0]
        cases.append({"text": s, "ids": full, "ids_max40": enc40, "decoded": t.decode(full, skip_special_tokens=True)})
    rng = random.Random(99)
    pool = list(range(0, 1100)) + list(range(1100, 30524, 7)) + [0, 100, 101, 102, 103, 30522, 30523] * 20
    decode_cases = []
    for _ in range(200):
        ids = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
        decode_cases.append(
            {"ids": ids, "skip": t.decode(ids, skip_special_tokens=True), "keep": t.decode(ids, skip_special_tokens=False)}
        )
    out = {"made_with": f"transformers {transformers.__version__} BertTokenizer.from_pretrained + [DEC], [ENC]",
           "encode": cases, "decode": decode_cases}
    (HERE / "tokenizer_bert_uncased_tf4251.json").write_text(json.dumps(out, ensure_ascii=True, indent=0) + "\n")


if __name__ == "__main__":
    main()
