"""Compare panda's ProGAN and StyleGAN1 with genforce's own generators on random generators.

Needs a local checkout of github.com/genforce/genforce (not part of panda):
    PYTHONPATH=. python experiments/genforce_equivalence.py /path/to/genforce
Each genforce generator gets random weights (biases, noise weights, ``w_avg`` and the constant
input too), is saved in genforce's checkpoint format ``{'generator', 'discriminator',
'generator_smooth'}`` and loaded by panda from that file; images and the features at every
``layer{i}`` are compared for the same z (genforce: ``randomize_noise=False``).
"""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[1])
from models.pggan_generator import PGGANGenerator
from models.stylegan_generator import StyleGANGenerator

from panda.generators.genforce import ProGAN, StyleGAN1

PROGAN_CASES = [dict(resolution=64, z_space_dim=32, fmaps_base=1024, fmaps_max=64), dict(resolution=1024)]
STYLEGAN_CASES = [  # (genforce kwargs, trunc_psi, trunc_layers)
    (
        dict(
            resolution=256,
            z_space_dim=32,
            w_space_dim=32,
            mapping_layers=4,
            mapping_fmaps=32,
            fmaps_base=2048,
            fmaps_max=64,
        ),
        1.0,
        None,
    ),
    (
        dict(
            resolution=256,
            z_space_dim=32,
            w_space_dim=32,
            mapping_layers=4,
            mapping_fmaps=32,
            fmaps_base=2048,
            fmaps_max=64,
            fused_scale=False,
        ),
        0.7,
        6,
    ),
    (dict(resolution=1024), 0.7, 8),
]
PANDA_ARCH = {"z_space_dim": "z_dim", "w_space_dim": "w_dim"}


def panda_arch(kwargs: dict) -> dict:
    """genforce's constructor arguments under panda's names (the resolution comes from the file)."""
    return {PANDA_ARCH.get(k, k): v for k, v in kwargs.items() if k != "resolution"}


def randomise(net: torch.nn.Module) -> None:
    """Random non-zero biases, noise weights, constant input and ``w_avg`` (genforce inits them to 0 or 1)."""
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith(("bias", "apply_noise.weight", "const", "w_avg")):
                tensor.normal_(0, 0.2 if name.endswith("bias") else 1.0)


def save(net: torch.nn.Module) -> str:
    path = str(Path(tempfile.mkdtemp()) / "g.pth")
    torch.save({"generator": net.state_dict(), "discriminator": {}, "generator_smooth": net.state_dict()}, path)
    return path


def reference(net: torch.nn.Module, hooked: torch.nn.Module, z: torch.Tensor, **kwargs) -> tuple:
    """genforce's image for ``z`` and the outputs of every ``layer{i}`` of ``hooked`` (StyleGAN's: ``(x, style)``)."""
    found = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, n=n: found.__setitem__(n, out[0] if isinstance(out, tuple) else out)
        )
        for n, module in hooked.named_children()
        if n.startswith("layer")
    ]
    with torch.no_grad():
        image = net(z, **kwargs)["image"]
    for hook in hooks:
        hook.remove()
    return image, found


def compare(label: str, ref_image, ref_feats, gen, z, prefix: str) -> None:
    with torch.no_grad():
        image = gen(z)
        worst = max(
            (gen.features(z, prefix + n) - f).abs().max().item() / f.abs().max().item() for n, f in ref_feats.items()
        )
    diff = (image - ref_image).abs().max().item()
    print(
        f"{label}: max|panda - genforce| image = {diff:.2e} (|img| <= {ref_image.abs().max():.2f}); "
        f"max relative difference over the {len(ref_feats)} layer{{i}} features {worst:.2e}"
    )


torch.manual_seed(0)
for kwargs in PROGAN_CASES:
    G = PGGANGenerator(**kwargs).eval()
    randomise(G)
    z = torch.randn(2, G.z_space_dim)
    ref, found = reference(G, G, z)
    gen = ProGAN(weights=save(G), arch=panda_arch(kwargs))
    compare(f"ProGAN {kwargs}", ref, found, gen, z, "")

for kwargs, psi, layers in STYLEGAN_CASES:
    G = StyleGANGenerator(**kwargs).eval()
    randomise(G)
    z = torch.randn(2, G.z_space_dim)
    ref, found = reference(G, G.synthesis, z, trunc_psi=psi, trunc_layers=layers)
    gen = StyleGAN1(weights=save(G), arch=panda_arch(kwargs), truncation_psi=psi, truncation_cutoff=layers)
    compare(f"StyleGAN1 {kwargs} psi={psi} trunc_layers={layers}", ref, found, gen, z, "synthesis.")
