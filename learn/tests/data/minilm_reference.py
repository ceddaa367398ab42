#!/usr/bin/env python3
"""Writes minilm-reference.json: what the reference implementation (Hugging Face tokenizers +
sentence-transformers on PyTorch, from the original float32 weights) gives for
all-MiniLM-L6-v2, so amble's own tokenizer and encoder can be checked against it.

    python3 minilm_reference.py MODEL_DIR ../../../data/banking77/test.csv > minilm-reference.json

MODEL_DIR holds the original files (see data/models/all-MiniLM-L6-v2/convert.py for where they
come from). Needs sentence-transformers and torch; not run by CI.
"""
import csv
import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

TRICKY = [
    "",
    "   ",
    "Hello, World!",
    "I can't find my card… where is it?!",
    "Café résumé naïve façade Ångström",
    "ÉCOLE NORMALE SUPÉRIEURE",
    "我的银行卡丢了，怎么办？",
    "日本語のテキストと English mixed",
    "Привет, как дела?",
    "£100 €50 $20 ¥3000 — was charged twice!!",
    "email me at someone@example.com or call +44 20 7946 0958",
    "tab\there\nnewline\r\nand\u00a0nbsp\u2003em-space",
    "zero\u200bwidth\u200djoiner and soft\u00adhyphen",
    "control\x00char\x07bell\ufffdreplacement",
    "emoji 😀👍🏽 and ❤️ hearts",
    "a" * 120,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ﬁ ligature and ﬀ and Ⅻ roman",
    "Straße İstanbul ǅ",
    "(parentheses) [brackets] {braces} <angles> ^caret^ `tick` |pipe| ~tilde~",
    "naïve 😀 我 ok",
    " ".join(["word"] * 300),
    "The quick brown fox jumps over the lazy dog. " * 30,
]


def main(model_dir: str, test_csv: str) -> None:
    model = SentenceTransformer(model_dir, device="cpu")
    tok = model.tokenizer
    max_len = model.max_seq_length

    def ids(text: str) -> list[int]:
        return tok(text, truncation=True, max_length=max_len)["input_ids"]

    with open(test_csv, newline="") as f:
        test = [row["text"] for row in csv.DictReader(f)]
    embed_texts = TRICKY + test[:24]
    with torch.no_grad():
        emb = model.encode(embed_texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    out = {
        "generator": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "model_revision": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        "max_seq_length": max_len,
        "tokens": [{"text": t, "ids": ids(t)} for t in TRICKY],
        "banking77_test_ids": [ids(t) for t in test],
        "embeddings": [
            {"text": t, "embedding": [round(float(x), 7) for x in e]}
            for t, e in zip(embed_texts, emb)
        ],
    }
    json.dump(out, sys.stdout, ensure_ascii=False, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
