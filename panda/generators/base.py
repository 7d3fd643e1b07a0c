"""The interface every generator offers: latents, images, features at a layer, and resuming.

A layer is named by its module path in the wrapped ``torch.nn.Module`` (``main.8``,
``synthesis.b16.conv1``, ``generator.layers.4``). :meth:`FeatureGenerator.features` stops the
forward pass at that layer (nothing after it runs); :meth:`FeatureGenerator.resume` continues
synthesis from given, possibly edited, features at that layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from panda.errors import ConfigError, WeightsError
from panda.generators.weights import resolve_weights


class _StopForwardError(Exception):
    """Raised by a forward hook to end the forward pass at the requested layer."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


class FeatureGenerator(nn.Module):
    """A frozen, pretrained generator split at named layers.

    Subclasses set :attr:`net` (the real module whose paths name the layers), implement
    :meth:`forward` (and :meth:`sample_latents` unless the latents are standard normal of
    ``net.z_dim``), and either keep the generic :meth:`resume` (for layers inside the
    ``nn.Sequential`` named by :attr:`sequential_root`) or override it.
    """

    name: str = "generator"
    sequential_root: str | None = None
    style_based: bool = False  # True: :meth:`codes` are ``w``, not the latents
    resume_needs_latents: bool = False  # True: layers after the split read the latents (StyleGAN's w)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self._layer_shapes: dict[str, tuple[int, int, int]] | None = None

    def train(self, mode: bool = True) -> FeatureGenerator:
        """The generator is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def sample_latents(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` latents ``[n, z_dim]`` drawn (on the CPU) from the seeded ``generator``: standard normal."""
        return torch.randn(n, self.net.z_dim, generator=generator)

    def forward(self, latents: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` for ``latents``."""
        raise NotImplementedError

    # ----- latent codes: what the latent-space baselines edit ----------------------------------
    def codes(self, latents: Tensor) -> Tensor:
        """The codes ``[B, ..., D]`` that latent-space edits move along (here the latents themselves;
        style-based generators: their ``w``). A direction ``[D]`` broadcasts over the middle axes."""
        return latents

    def synthesize(self, codes: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` from (possibly edited) :meth:`codes`."""
        return self(codes)

    def code_layers(self) -> list[str]:
        """Module paths of the layers whose weights read the codes first (what SeFa factorises)."""
        raise ConfigError(f"generator '{self.name}' does not name the layers that read its latent codes")

    def style_layers(self) -> list[str]:
        """Module paths whose outputs are style vectors ``[B, channels]`` (empty: not style-based)."""
        return []

    # ----- layers -----------------------------------------------------------------------------
    def layer_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Every module path whose output is a feature map, with its ``(C, H, W)``."""
        if self._layer_shapes is None:
            shapes: dict[str, tuple[int, int, int]] = {}
            hooks = []
            for path, module in self.net.named_modules():
                if path:
                    hooks.append(module.register_forward_hook(_shape_recorder(shapes, path)))
            try:
                with torch.inference_mode():
                    self(self.sample_latents(1, torch.Generator().manual_seed(0)).to(self.device))
            finally:
                for hook in hooks:
                    hook.remove()
            self._layer_shapes = shapes
        return self._layer_shapes

    def check_layer(self, layer: str) -> tuple[int, int, int]:
        """The ``(C, H, W)`` of ``layer``; a :class:`ConfigError` listing valid layers otherwise."""
        shapes = self.layer_shapes()
        if layer not in shapes:
            valid = ", ".join(shapes)
            raise ConfigError(f"unknown layer '{layer}' for generator '{self.name}'. Valid layers: {valid}")
        return shapes[layer]

    # ----- split forward ----------------------------------------------------------------------
    def features(self, latents: Tensor, layer: str) -> Tensor:
        """Feature maps ``[B, C, H, W]`` at ``layer``; the forward pass stops there."""
        module = self.net.get_submodule(layer)

        def stop(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            raise _StopForwardError(output)

        hook = module.register_forward_hook(stop)
        try:
            self(latents)
        except _StopForwardError as stopped:
            return stopped.output
        finally:
            hook.remove()
        raise RuntimeError(f"layer '{layer}' was never reached in the forward pass of '{self.name}'")

    def resume_by_replacing(self, features: Tensor, layer: str, latents: Tensor) -> Tensor:
        """Images from ``latents`` with the output of ``layer`` replaced by ``features``.

        For generators whose later layers also need the latents (StyleGAN's w, BigGAN's class
        embedding): the layers before ``layer`` run again, so their side outputs (StyleGAN's skip
        images) stay those of ``latents``; with unedited features this is the full forward.
        """
        self.check_layer(layer)
        module = self.net.get_submodule(layer)

        def replace(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
            if features.shape != output.shape:
                raise ConfigError(f"features {tuple(features.shape)} do not fit layer '{layer}' {tuple(output.shape)}")
            return features.to(output.dtype)

        hook = module.register_forward_hook(replace)
        try:
            return self(latents)
        finally:
            hook.remove()

    def resume(self, features: Tensor, layer: str, latents: Tensor | None = None) -> Tensor:
        """Images from ``features`` at ``layer`` (``latents``: those the features came from, which
        generators with :attr:`resume_needs_latents` read after the layer)."""
        if self.resume_needs_latents:
            if latents is None:
                raise ConfigError(f"{self.name}.resume needs the latents the features came from")
            return self.resume_by_replacing(features, layer, latents)
        if self.sequential_root is None:
            raise NotImplementedError(f"'{self.name}' does not implement resume()")
        root = self.sequential_root
        if layer != root and not layer.startswith(root + "."):
            raise ConfigError(f"layer '{layer}' is outside '{root}'; cannot resume '{self.name}' from it")
        parts = layer[len(root) :].lstrip(".").split(".") if layer != root else []
        return _run_rest(self.net.get_submodule(root), parts, features)


def _shape_recorder(shapes: dict[str, tuple[int, int, int]], path: str):
    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and path not in shapes:
            shapes[path] = tuple(output.shape[1:])

    return record


def _run_rest(container: nn.Module, path: Sequence[str], x: Tensor) -> Tensor:
    """Given the output ``x`` of ``container.<path>``, finish ``container``'s forward.

    Every module on ``path`` above the layer must be an ``nn.Sequential``.
    """
    if not path:
        return x
    if not isinstance(container, nn.Sequential):
        raise ConfigError(f"cannot resume inside non-sequential module {type(container).__name__}")
    index = int(path[0])
    x = _run_rest(container[index], path[1:], x)
    for module in list(container)[index + 1 :]:
        x = module(x)
    return x


def build_or_load(
    name: str,
    net_class: type[nn.Module],
    weights: str | None,
    random_init: bool,
    arch: dict[str, Any] | None,
    read: Callable[[Path, dict[str, Any]], tuple[dict[str, Any], dict[str, Tensor]]],
    source: str,
    cache_name: str | None = None,
) -> nn.Module:
    """``net_class(**arch)`` with random weights, or the network in the file ``weights`` (a URL downloads once,
    into the cache as ``cache_name``).

    ``read(path, arch)`` gives the constructor arguments and the state dict stored in the file
    (``source`` names what the file should be, for the error without one).
    """
    arch = dict(arch or {})
    if random_init:
        if not arch:
            raise ConfigError(f"gen.random_init=true for {name} needs gen.net.arch (the generator's init kwargs)")
        try:
            return net_class(**arch)
        except TypeError as error:
            raise ConfigError(f"gen.net.arch does not fit {name}: {error}") from None
    if not weights:
        raise WeightsError(f"{name} needs gen.weights=PATH_OR_URL of {source} (or gen.random_init=true)")
    path = resolve_weights(weights, name=cache_name)
    kwargs, state = read(path, arch)
    try:
        net = net_class(**kwargs)
        mismatch = state_mismatch(net.state_dict(), state)
        if mismatch:
            raise WeightsError(mismatch)
        net.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError, ConfigError, WeightsError) as error:
        raise WeightsError(f"{path} does not hold a {name} generator for arch {kwargs}: {error}") from None
    return net


def state_mismatch(expected: dict[str, Tensor], stored: dict[str, Tensor]) -> str:
    """How ``stored`` differs from ``expected`` (missing, unexpected, other shapes) in one line; empty if it fits."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k} {list(stored[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in stored and (not isinstance(stored[k], Tensor) or stored[k].shape != v.shape)
    ]
    found = [
        (len(keys), what, keys[0])
        for keys, what in (
            (missing, "missing"),
            (unexpected, "unexpected"),
            (shapes, "of another shape (file vs arch)"),
        )
        if keys
    ]
    return "; ".join(f"{n} keys {what}, e.g. {example}" for n, what, example in found)
