"""The interface every generator offers: latents, images, features at a layer, and resuming.

A layer is named by its module path in the wrapped ``torch.nn.Module`` (``main.8``,
``synthesis.b16.conv1``, ``generator.layers.4``). :meth:`FeatureGenerator.features` stops the
forward pass at that layer (nothing after it runs); :meth:`FeatureGenerator.resume` continues
synthesis from given, possibly edited, features at that layer, running only the modules after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from panda.base.errors import ConfigError, WeightsError
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
    ``net.z_dim``), and either keep the generic resume (for layers inside the ``nn.Sequential``
    named by :attr:`sequential_root`) or implement ``_resume`` (with ``_latent_values`` and
    ``_captures`` for what the layers after the split read besides the features).
    """

    name: str = "generator"
    sequential_root: str | None = None
    style_based: bool = False  # True: :meth:`codes` are ``w``, not the latents
    resume_needs_latents: bool = False  # True: layers after the split read the latents (StyleGAN's w)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self._layer_shapes: dict[str, tuple[int, int, int]] | None = None

    @staticmethod
    def from_module(
        module: nn.Module,
        sample_latents: int | Sequence[int] | Callable[[int, torch.Generator], Tensor],
        name: str | None = None,
        resume: Callable[[Tensor, str, Tensor], Tensor] | None = None,
    ) -> FeatureGenerator:
        """Any ``module`` that maps latents to images ``[B, 3, H, W]`` in ``[-1, 1]`` as a generator, frozen in eval
        mode (:class:`ModuleGenerator`: ``sample_latents`` is a latent's size or shape,
        or a function ``(n, torch_generator) -> latents``; ``resume(features, layer, latents) -> images`` runs the
        module from a layer on where it cannot by itself)."""
        return ModuleGenerator(module, sample_latents, name, resume)

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
        return self._forward_until(latents, layer, {})[0]

    def features_and_state(self, latents: Tensor, layer: str) -> tuple[Tensor, ResumeState]:
        """The features at ``layer`` (the forward pass stops there) and the :class:`ResumeState`
        :meth:`resume` continues from: computed once per batch, they make every later resume run
        only the modules after the layer."""
        self.check_resumable(layer)
        features, captured = self._forward_until(latents, layer, self._captures(layer))
        return features, ResumeState(layer, {**self._latent_values(latents), **captured})

    def resume(
        self, features: Tensor, layer: str, latents: Tensor | None = None, state: ResumeState | None = None
    ) -> Tensor:
        """Images ``[B, 3, H, W]`` from (possibly edited) ``features`` at ``layer``; only the modules
        after the layer run.

        What they read besides the features comes from ``state`` (of :meth:`features_and_state`),
        or else from ``latents``, the latents the features came from (StyleGAN's ws, BigGAN's
        condition vector), for generators with :attr:`resume_needs_latents`. Values computed before
        the layer that later layers read (StyleGAN2's skip image) take a forward pass up to the
        layer when no ``state`` is given.
        """
        shape = self.check_resumable(layer)
        if tuple(features.shape[1:]) != shape:
            raise ConfigError(f"features {tuple(features.shape)} do not fit layer '{layer}' {shape}")
        if state is None:
            state = self._state(latents, layer)
        elif latents is not None:
            raise ConfigError(f"{self.name}.resume takes the latents or a resume state, not both")
        elif state.layer != layer:
            raise ConfigError(f"the resume state belongs to layer '{state.layer}', not '{layer}'")
        sizes = {len(value) for value in state.values.values() if value is not None}
        if sizes - {len(features)}:
            raise ConfigError(f"{len(features)} feature maps, but a resume state of {sorted(sizes)} samples")
        return self._resume(features, state)

    def resumable_layers(self) -> list[str]:
        """The layers :meth:`resume` continues from (here: every layer)."""
        return list(self.layer_shapes())

    def check_resumable(self, layer: str) -> tuple[int, int, int]:
        """The ``(C, H, W)`` of ``layer``; a :class:`ConfigError` if :meth:`resume` cannot continue from it."""
        shape = self.check_layer(layer)
        if layer not in self.resumable_layers():
            valid = ", ".join(self.resumable_layers())
            raise ConfigError(f"{self.name} cannot resume from layer '{layer}'; it resumes from: {valid}")
        return shape

    def _state(self, latents: Tensor | None, layer: str) -> ResumeState:
        """The resume state of ``latents`` at ``layer`` (a forward pass up to the layer if values before it count)."""
        captures = self._captures(layer)
        if latents is None:
            if self.resume_needs_latents or captures:
                raise ConfigError(f"{self.name}.resume needs the latents the features came from (or their state)")
            return ResumeState(layer)
        if captures:
            return self.features_and_state(latents, layer)[1]
        return ResumeState(layer, self._latent_values(latents))

    def _latent_values(self, latents: Tensor) -> dict[str, Tensor]:
        """The inputs of later layers that follow from the latents alone (StyleGAN's ``ws``); here none."""
        return {}

    def _captures(self, layer: str) -> dict[str, tuple[str, int | None]]:
        """Values computed before ``layer`` that the layers after it read: ``name -> (module path,
        index of its positional input, or None for its output)``; here none."""
        return {}

    def _resume(self, features: Tensor, state: ResumeState) -> Tensor:
        """The images from ``features`` at ``state.layer``: the rest of :attr:`sequential_root`'s forward."""
        root, layer = self.sequential_root, state.layer
        if root is None:
            raise NotImplementedError(f"'{self.name}' does not implement resume()")
        if layer != root and not layer.startswith(root + "."):
            raise ConfigError(f"layer '{layer}' is outside '{root}'; cannot resume '{self.name}' from it")
        parts = layer[len(root) :].lstrip(".").split(".") if layer != root else []
        return _run_rest(self.net.get_submodule(root), parts, features)

    def _forward_until(
        self, latents: Tensor, layer: str, captures: dict[str, tuple[str, int | None]]
    ) -> tuple[Tensor, dict[str, Tensor | None]]:
        """The output of ``layer`` (the forward pass stops there) and the ``captures`` met before it."""
        captured: dict[str, Tensor | None] = {}

        def stop(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            raise _StopForwardError(output)

        def keep(name: str, index: int | None) -> Callable[..., None]:
            def output_hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
                captured.setdefault(name, output)

            def input_hook(_module: nn.Module, inputs: tuple[Tensor | None, ...]) -> None:
                captured.setdefault(name, inputs[index])

            return output_hook if index is None else input_hook

        hooks = [self.net.get_submodule(layer).register_forward_hook(stop)]
        for name, (path, index) in captures.items():
            module = self.net.get_submodule(path)
            register = module.register_forward_hook if index is None else module.register_forward_pre_hook
            hooks.append(register(keep(name, index)))
        try:
            self(latents)
        except _StopForwardError as stopped:
            return stopped.output, captured
        finally:
            for hook in hooks:
                hook.remove()
        raise RuntimeError(f"layer '{layer}' was never reached in the forward pass of '{self.name}'")


@dataclass(frozen=True)
class ResumeState:
    """What :meth:`FeatureGenerator.resume` reads besides the features at ``layer``, for one batch:
    inputs of the later layers that follow from the latents (StyleGAN's ``ws``, BigGAN's
    ``condition``) and values computed before the layer (StyleGAN2's skip image ``img``)."""

    layer: str
    values: dict[str, Tensor | None] = field(default_factory=dict)


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


# Any torch.nn.Module that maps latents to images as a generator: FeatureGenerator.from_module. Features at a layer
# need nothing of the module: the forward pass stops at the layer named by its module path. Images from (edited)
# features run the rest of the module by themselves where the layer sits inside a chain of nn.Sequential modules whose
# output is the module's output (main.8 of a DCGAN whose forward returns self.main(z)). Anywhere else the user says
# how in one function, resume(features, layer, latents) -> images.
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
