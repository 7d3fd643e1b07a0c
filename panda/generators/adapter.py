"""Any ``torch.nn.Module`` that maps latents to images as a generator: ``FeatureGenerator.from_module``.

Features at a layer need nothing of the module: the forward pass stops at the layer named by its module path.
Images from (edited) features run the rest of the module by themselves where the layer sits inside a chain of
``nn.Sequential`` modules whose output is the module's output (``main.8`` of a DCGAN whose ``forward`` returns
``self.main(z)``). Anywhere else the user says how in one function, ``resume(features, layer, latents) -> images``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator, ResumeState, _run_rest

Resume = Callable[[Tensor, str, Tensor], Tensor]  # (features [B, C, H, W], layer, latents) -> images [B, 3, H, W]
Latents = int | Sequence[int] | Callable[[int, torch.Generator], Tensor]


class ModuleGenerator(FeatureGenerator):
    """``module`` (latents -> images ``[B, 3, H, W]`` in ``[-1, 1]``) as a frozen :class:`FeatureGenerator`.

    Args:
        module: the network; it is put in eval mode and frozen (in place).
        sample_latents: the size of one latent (``512``; a shape such as ``(100, 1, 1)``), drawn standard normal;
            or a function ``(n, generator) -> latents [n, ...]`` drawing them on the CPU from the seeded
            ``torch.Generator`` (the same generator must give the same latents).
        name: the generator's name in the run's ``factors.pt`` (default: the module's class name).
        resume: ``(features, layer, latents) -> images``: the images from (edited) ``features`` at ``layer`` of
            the ``latents`` they came from, for modules that cannot run from the layer on by themselves.
    """

    def __init__(
        self, module: nn.Module, sample_latents: Latents, name: str | None = None, resume: Resume | None = None
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ConfigError(f"FeatureGenerator.from_module needs a torch.nn.Module, not a {type(module).__name__}")
        if not callable(sample_latents):
            shape = (sample_latents,) if isinstance(sample_latents, int) else tuple(sample_latents)
            if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ConfigError(f"sample_latents={sample_latents!r}: give a latent's size, its shape or a function")
            sample_latents = _standard_normal(shape)
        if next(module.parameters(), None) is None:
            raise ConfigError(f"{type(module).__name__} has no parameters: panda needs them for the generator's device")
        super().__init__(module)
        self.name = name or type(module).__name__
        self._draw = sample_latents
        self._user_resume = resume
        self.resume_needs_latents = resume is not None
        self._roots: dict[str, str] | None = None

    def sample_latents(self, n: int, generator: torch.Generator) -> Tensor:
        return self._draw(n, generator)

    def forward(self, latents: Tensor) -> Tensor:
        images = self.net(latents)
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ConfigError(f"{self.name} gives {found}, not images [B, 3, H, W]: panda needs RGB images in [-1, 1]")
        return images

    def resumable_layers(self) -> list[str]:
        """Every layer with a ``resume`` function; without one, the layers inside a chain of ``nn.Sequential``
        modules whose output is the module's."""
        return list(self.layer_shapes()) if self._user_resume is not None else list(self._sequential_roots())

    def check_resumable(self, layer: str) -> tuple[int, int, int]:
        shape = self.check_layer(layer)
        if layer not in self.resumable_layers():
            chains = ", ".join(self.resumable_layers()) or "none"
            raise ConfigError(
                f"{self.name} cannot run from layer '{layer}' on by itself (it runs from the layers inside a chain of "
                f"nn.Sequential modules whose output is the module's: {chains}); pass "
                "resume=fn(features, layer, latents) -> images to FeatureGenerator.from_module"
            )
        return shape

    def _latent_values(self, latents: Tensor) -> dict[str, Tensor]:
        return {"latents": latents} if self._user_resume is not None else {}

    def _resume(self, features: Tensor, state: ResumeState) -> Tensor:
        if self._user_resume is not None:
            return self._user_resume(features, state.layer, state.values["latents"])
        root = self._sequential_roots()[state.layer]
        path = state.layer[len(root) :].lstrip(".").split(".") if root != state.layer else []
        return _run_rest(self.net.get_submodule(root), path, features)

    def _sequential_roots(self) -> dict[str, str]:
        """``layer -> root``: the outermost ``nn.Sequential`` above each layer from which every module down to the
        layer's parent is an ``nn.Sequential`` (or the layer itself), for the layers where that root's output is the
        module's output (the same tensor: nothing runs after it)."""
        if self._roots is None:
            outputs: dict[str, object] = {}
            hooks = [
                module.register_forward_hook(lambda _m, _i, out, path=path: outputs.setdefault(path, out))
                for path, module in self.net.named_modules()
            ]
            try:
                with torch.inference_mode():
                    images = self.net(self.sample_latents(1, torch.Generator().manual_seed(0)).to(self.device))
            finally:
                for hook in hooks:
                    hook.remove()
            self._roots = {}
            for layer in self.layer_shapes():
                root = layer if outputs.get(layer) is images else _outer_chain(self.net, layer)
                if root is not None and outputs.get(root) is images:
                    self._roots[layer] = root
        return self._roots


def _outer_chain(net: nn.Module, layer: str) -> str | None:
    """The outermost module path above ``layer`` from which every module down to the layer's parent is an
    ``nn.Sequential`` (``''``: ``net`` itself), or None."""
    parts = layer.split(".")
    for start in range(len(parts)):
        above = [net.get_submodule(".".join(parts[:depth])) for depth in range(start, len(parts))]
        if all(isinstance(module, nn.Sequential) for module in above):
            return ".".join(parts[:start])
    return None


def _standard_normal(shape: tuple[int, ...]) -> Callable[[int, torch.Generator], Tensor]:
    def draw(n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, *shape, generator=generator)

    return draw
