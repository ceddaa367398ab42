#!/usr/bin/env python3
"""The reference for benches/encoder.rs: the same 512 Banking77 texts through
sentence-transformers (PyTorch, CPU) with the original all-MiniLM-L6-v2 weights.

    python3 learn/benches/st_encode.py MODEL_DIR [THREADS]

MODEL_DIR holds the original model (see data/models/all-MiniLM-L6-v2/convert.py). Prints
texts per second for batches of 64 (sentence-transformers' usual batching: sorted by length,
padded within a batch) and for one text at a time.
"""
import csv
import sys
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    root = Path(__file__).resolve().parents[2]
    with open(root / "data/banking77/train.csv", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)][:512]
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64])  # warm up
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True)
        best = min(best, time.perf_counter() - t0)
    one = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        model.encode([texts[0]], normalize_embeddings=True)
        one = min(one, time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {threads} threads")
    print(f"embed 512 texts: {best:.3f} s ({len(texts) / best:.0f} texts/s)")
    print(f"embed one text: {one * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
