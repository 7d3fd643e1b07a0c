"""Compare panda's StyleGAN3 with NVIDIA's reference implementation on random small generators.

Needs a local checkout of NVlabs/stylegan3 (not part of panda, non-commercial licence):
    PYTHONPATH=. python experiments/stylegan3_equivalence.py /path/to/stylegan3
Each generator is pickled by NVIDIA's own persistence code, then loaded by panda's restricted
unpickler with NVIDIA's modules removed from ``sys.modules``. On the CPU NVIDIA's code runs its
reference ``filtered_lrelu`` / ``upfirdn2d`` / ``bias_act``; on a GPU (``--device cuda``) it runs its
CUDA kernels where they compile, else the same references.
"""

import argparse
import math
import os
import pickle
import sys
import tempfile
import types

import packaging.version
import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("nvidia_stylegan3", help="path to a checkout of NVlabs/stylegan3")
parser.add_argument("--device", default="cpu")
parser.add_argument("--full", action="store_true", help="also the real FFHQ-T 1024 and AFHQv2-R 512 architectures")
args = parser.parse_args()
sys.path.insert(0, args.nvidia_stylegan3)
if "pkg_resources" not in sys.modules:  # NVIDIA's conv2d_gradfix imports parse_version from it (gone in setuptools 81)
    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=packaging.version.parse)
from training.networks_stylegan3 import Generator  # noqa: E402

from panda.generators.stylegan3 import StyleGAN3, StyleGAN3Net  # noqa: E402

# (name, resolution, synthesis kwargs, c_dim, psi, cutoff)
T = {"channel_base": 1024, "channel_max": 64, "magnitude_ema_beta": 0.999}
R = {"channel_base": 2048, "channel_max": 128, "conv_kernel": 1, "use_radial_filters": True}
CASES = [
    ("T", 32, {**T, "num_layers": 6}, 0, 1.0, None),
    ("T", 64, {**T, "num_layers": 8, "conv_clamp": None}, 0, 0.7, None),
    ("R", 32, {**R, "num_layers": 6}, 0, 0.5, 3),
    ("R", 64, {**R, "num_layers": 14, "conv_clamp": 0.5}, 5, 0.7, None),
    ("T", 64, {**T, "num_layers": 14, "margin_size": 4, "filter_size": 4}, 5, 0.5, 6),
]
if args.full:  # the official pickles' architectures (random weights, z_dim 32 and w_dim 32 as above)
    CASES += [
        ("T", 1024, {"channel_base": 32768, "channel_max": 512}, 0, 0.7, None),
        ("R", 512, {**R, "channel_base": 65536, "channel_max": 1024}, 0, 1.0, None),
    ]


def randomise(G: torch.nn.Module, transform: bool) -> None:
    """Random biases, magnitude EMAs, w_avg, input affine (and a user transform): every stored value matters."""
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2)
        for name, buffer in G.named_buffers():
            if name.endswith("magnitude_ema"):
                buffer.uniform_(0.3, 3.0)
        G.mapping.w_avg.normal_()
        G.synthesis.input.affine.weight.normal_()
        if transform:  # rotate by 10 degrees and shift: frequencies leave the band and are damped
            c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
            G.synthesis.input.transform.copy_(torch.tensor([[c, s, 0.3], [-s, c, -0.2], [0, 0, 1]]))


for i, (config, res, synthesis, c_dim, psi, cutoff) in enumerate(CASES):
    torch.manual_seed(i)
    G = Generator(32, c_dim, 32, res, 3, mapping_kwargs={"num_layers": 2}, **synthesis).eval()
    # panda's own architecture and filter design (what random_init builds) against NVIDIA's stored buffers
    designed = StyleGAN3Net(32, c_dim, 32, res, 3, mapping_kwargs={"num_layers": 2}, **synthesis).state_dict()
    assert {k: v.shape for k, v in designed.items()} == {k: v.shape for k, v in G.state_dict().items()}
    filters = max((designed[k] - v).abs().max().item() for k, v in G.state_dict().items() if k.endswith("_filter"))
    randomise(G, transform=i % 2 == 1)
    path = os.path.join(tempfile.mkdtemp(), "g.pkl")
    with open(path, "wb") as handle:
        pickle.dump({"G": G, "G_ema": G}, handle)
    names = [m for m in sys.modules if m.split(".")[0] in ("training", "torch_utils", "dnnlib")]
    nvidia = {m: sys.modules.pop(m) for m in names}
    gen = StyleGAN3(weights=path, truncation_psi=psi, truncation_cutoff=cutoff, class_index=3 if c_dim else None)
    sys.modules.update(nvidia)
    G, gen = G.to(args.device), gen.to(args.device)
    batch = 1 if res > 64 else 4
    z = torch.randn(batch, 32, device=args.device)
    c = torch.nn.functional.one_hot(torch.full((batch,), 3), c_dim).float().to(args.device) if c_dim else None
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        ref = G.synthesis(ws, force_fp32=True)
        ours = gen(z)
        layer = G.synthesis.layer_names[len(G.synthesis.layer_names) // 2]
        feats = gen.features(z, f"synthesis.{layer}")
        x = G.synthesis.input(ws[:, 0])
        for name, w in zip(G.synthesis.layer_names, ws[:, 1:].unbind(1), strict=True):
            x = getattr(G.synthesis, name)(x, w, force_fp32=True)
            if name == layer:
                break
    print(
        f"config {config} res={res} layers={G.synthesis.num_layers} {synthesis} c_dim={c_dim} psi={psi} "
        f"cutoff={cutoff} transform={i % 2 == 1}: max|panda - ref| image {(ours - ref).abs().max().item():.2e} "
        f"(|img| <= {ref.abs().max().item():.2f}), ws {(gen.ws(z) - ws).abs().max().item():.2e}, "
        f"{layer} {(feats - x).abs().max().item():.2e} (|f| <= {x.abs().max().item():.2f}); filters {filters:.2e}"
    )
