"""Compare panda's StyleGAN2 with NVIDIA's reference implementation on random tiny generators.

Needs a local checkout of NVlabs/stylegan2-ada-pytorch (not part of panda, non-commercial licence):
    NVIDIA_SG2ADA=/path/to/stylegan2-ada-pytorch PYTHONPATH=. python experiments/stylegan2_equivalence.py
The generator is pickled by NVIDIA's own persistence code, then loaded by panda's restricted
unpickler with NVIDIA's modules removed from ``sys.modules``.
"""

import os
import pickle
import sys
import tempfile

import torch

sys.path.insert(0, os.environ["NVIDIA_SG2ADA"])
from training.networks import Generator

from panda.generators.stylegan2 import StyleGAN2

CASES = [(32, 1024, 64, 256, 0, 1.0, None), (64, 2048, 128, None, 0, 0.7, None), (64, 2048, 128, 0.5, 5, 0.5, 4)]

for res, cbase, cmax, clamp, c_dim, psi, cutoff in CASES:
    torch.manual_seed(0)
    synthesis = {"channel_base": cbase, "channel_max": cmax, "num_fp16_res": 2, "conv_clamp": clamp}
    G = Generator(32, c_dim, 32, res, 3, mapping_kwargs={"num_layers": 4}, synthesis_kwargs=synthesis).eval()
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith(("bias", "noise_strength")):
                param.normal_(0, 0.2)
        G.mapping.w_avg.normal_()
    path = os.path.join(tempfile.mkdtemp(), "g.pkl")
    with open(path, "wb") as handle:
        pickle.dump({"G": G, "G_ema": G}, handle)
    names = [m for m in sys.modules if m.split(".")[0] in ("training", "torch_utils", "dnnlib")]
    nvidia = {m: sys.modules.pop(m) for m in names}
    gen = StyleGAN2(weights=path, truncation_psi=psi, truncation_cutoff=cutoff, class_index=3 if c_dim else None)
    sys.modules.update(nvidia)
    z = torch.randn(4, 32)
    c = torch.nn.functional.one_hot(torch.full((4,), 3), c_dim).float() if c_dim else None
    with torch.no_grad():
        ref = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const", force_fp32=True)
        half = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
        diff = (gen(z) - ref).abs().max().item()
    print(
        f"res={res} channel_base={cbase} channel_max={cmax} conv_clamp={clamp} c_dim={c_dim} psi={psi} "
        f"cutoff={cutoff}: max|panda - ref fp32| = {diff:.2e} (|img| <= {ref.abs().max():.2f}); "
        f"official fp16 default vs fp32: {(half - ref).abs().max().item():.2e}"
    )
