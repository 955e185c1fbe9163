#!/usr/bin/env python3
"""vision_hf_compare.py - the CPU vision tower against transformers' own model.

A development check, not part of ctest (it needs torch and transformers, which the test
environment does not install): loads the model.visual.* tensors of a checkpoint written
by `reap-genmodel --family qwen3_vl_moe --vision` into transformers'
Qwen3VLMoeVisionModel (float32, eager attention), feeds it the patches and grids of a
`test_vision --dump` directory and prints the relative L2 error of the C outputs and of
the float64 oracle (vision_oracle.py) against it. docs/calibration.md records a run.

Usage: vision_hf_compare.py MODEL_DIR DUMP_DIR
"""
import json
import os
import sys

import numpy as np
import torch
from transformers.models.qwen3_vl_moe.configuration_qwen3_vl_moe import (
    Qwen3VLMoeVisionConfig)
from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reap_oracle import Checkpoint  # noqa: E402
import vision_oracle  # noqa: E402


def main(model_dir, dump_dir):
    with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as fh:
        vc = json.load(fh)["vision_config"]
    with open(os.path.join(dump_dir, "meta.json"), "r", encoding="utf-8") as fh:
        meta = json.load(fh)
    cfg = Qwen3VLMoeVisionConfig(**{k: v for k, v in vc.items() if k != "model_type"})
    cfg._attn_implementation = "eager"
    model = Qwen3VLMoeVisionModel(cfg).eval()
    ck = Checkpoint(model_dir)
    state = {name[len("model.visual."):]: torch.tensor(ck.get(name), dtype=torch.float32)
             for name in ck.where if name.startswith("model.visual.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("inv_freq")]
    if missing or unexpected:
        raise SystemExit("state dict mismatch: missing %s, unexpected %s"
                         % (missing, unexpected))

    np_, nt, nd = meta["n_patches"], meta["n_tokens"], meta["n_deepstack"]
    D = vc["in_channels"] * vc["temporal_patch_size"] * vc["patch_size"] ** 2
    Ho = vc["out_hidden_size"]
    rd = lambda n, shape: np.fromfile(os.path.join(dump_dir, n), dtype="<f4").reshape(shape)
    patches = rd("patches.f32", (np_, D))
    c_out = rd("out.f32", (nt, Ho)).astype(np.float64)
    c_deep = rd("deep.f32", (nd, nt, Ho)).astype(np.float64) if nd else None
    with torch.no_grad():
        out, deep = model(torch.tensor(patches), torch.tensor(meta["grids"]))
    h_out = out.double().numpy()
    o_out, o_deep = vision_oracle.vision_forward(
        dict(vc), ck, patches.astype(np.float64), [tuple(g) for g in meta["grids"]])
    rel = vision_oracle.rel_l2
    print("grids %s, %d tokens" % (meta["grids"], nt))
    print("merger:        C vs transformers %.3e, oracle vs transformers %.3e, C vs oracle %.3e"
          % (rel(c_out, h_out), rel(o_out, h_out), rel(c_out, o_out)))
    for k in range(nd):
        h = deep[k].double().numpy()
        print("deepstack[%d]:  C vs transformers %.3e, oracle vs transformers %.3e, "
              "C vs oracle %.3e" % (k, rel(c_deep[k], h), rel(o_deep[k], h),
                                    rel(c_deep[k], o_deep[k])))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
