"""A finished training run brought back to life: its factors and the generator they belong to.

The generator is rebuilt from the project's own generator config, ``conf/gen/<generator>.yaml``
for the generator named in ``factors.pt`` (or the user's, ``<$PANDA_CONFIG_PATH>/gen/<generator>.yaml``), with
the plain values of the training config stored there (its ``gen`` node) in place of the defaults. So the uses of
the factors (editing, localisation, refinement) need only the run directory, and a factors file from elsewhere
chooses no code: a stored ``_target_`` must be the config's own, every stored key must be one the config has,
and no stored string may hold an interpolation (``${...}``). Code outside panda's generators that a config names
runs only for the module prefixes the user trusts (``trusted_modules``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from panda.base.config import instantiate, options
from panda.base.errors import ConfigError
from panda.base.factors_file import CANONICAL, FORM, load_factors
from panda.generators.api import gen_config
from panda.generators.base import FeatureGenerator, ResumeState
from panda.generators.weights import cached_path, is_url
from panda.method.data import Stream, batch_generator, checked_features, layer_features
from panda.method.factorization import normalized_parts


@dataclass
class Factors:
    """Factors ``A`` ``[C, R_C]``, ``P`` ``[S, R_S]`` learnt at ``layer`` of ``generator``, the parts'
    ``labels`` when they were named (:mod:`panda.uses.face_regions`), and whether ``A`` is in the canonical
    form (:func:`panda.method.factorization.canonical_order`; files written before panda stored it are not)."""

    A: Tensor
    P: Tensor
    generator: FeatureGenerator
    name: str
    layer: str
    feature_shape: tuple[int, int, int]
    labels: list[str] | None = None
    canonical: bool = False

    @property
    def parts(self) -> int:
        return self.P.shape[1]

    @property
    def appearances(self) -> int:
        return self.A.shape[1]

    @property
    def hw(self) -> tuple[int, int]:
        return self.feature_shape[1], self.feature_shape[2]

    def part_maps(self) -> Tensor:
        """The parts as ``[R_S, H, W]`` maps, each min-max rescaled to ``[0, 1]``."""
        return normalized_parts(self.P, *self.hw)

    def latents(self, seed: int, indices: Sequence[int]) -> Tensor:
        """Latents of the numbered evaluation samples: sample ``i`` is the same whatever else is asked for."""
        return torch.cat(
            [self.generator.sample_latents(1, batch_generator(seed, Stream.SAMPLES, int(i))) for i in indices]
        )

    def features(self, latents: Tensor) -> Tensor:
        """Feature maps ``[B, C, H, W]`` of ``latents`` at the run's layer."""
        return layer_features(self.generator, self.layer, latents)

    def features_and_state(self, latents: Tensor) -> tuple[Tensor, ResumeState]:
        """The feature maps of ``latents`` (as :meth:`features`) and the state :meth:`images` resumes from
        (StyleGAN's ``ws`` and skip image): computed once per batch, so that every edit of it runs only
        the generator after the layer."""
        with torch.no_grad():  # as :meth:`features`: the features may enter autograd (refinement)
            features, state = self.generator.features_and_state(latents.to(self.generator.device), self.layer)
        return checked_features(self.generator, self.layer, features), state

    def images(self, features: Tensor, state: ResumeState) -> Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` from (possibly edited) features at the run's layer, resumed
        from the ``state`` of the batch they came from (:meth:`features_and_state`)."""
        with torch.inference_mode():
            return self.generator.resume(features.to(self.generator.device), self.layer, state=state).cpu()

    def check_index(self, value: int | str, kind: str) -> int:
        """``value`` as a valid part (``kind='part'``) or appearance index; a part may also be given by its
        label (``mouth``). A :class:`ConfigError` otherwise (an unknown name lists the known ones)."""
        if kind == "part" and isinstance(value, str):
            if not self.labels:
                raise ConfigError(
                    f"part '{value}' is a name, but this run's parts are not named: give an index, or name them "
                    "with `python evaluate.py task=name run=<the run>`"
                )
            if value not in self.labels:
                raise ConfigError(f"unknown part name '{value}'; this run's parts: {', '.join(self.labels)}")
            return self.labels.index(value)
        limit = self.parts if kind == "part" else self.appearances
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            rank = "R_S" if kind == "part" else "R_C"
            raise ConfigError(f"{kind} index {value!r} is out of range: this run has {rank}={limit}, so 0..{limit - 1}")
        return value


PROJECT_MODULE = "panda.generators"  # the code of panda's generator configs: trusted without saying so


def open_run(
    path: str | Path,
    generator: str | None = None,
    layer: str | None = None,
    trusted_modules: Sequence[str] = (),
    net: FeatureGenerator | None = None,
) -> Factors:
    """Load the factors of a training run directory (or ``factors.pt``) and rebuild its generator, or take ``net``,
    the generator they were learnt on, as it is.

    ``generator`` / ``layer``, when given, are what the caller expects; factors learnt for
    another generator or layer raise a :class:`ConfigError`. A generator config whose code lies outside panda's
    generators is built only when its modules start with one of ``trusted_modules`` (:func:`check_trusted`).
    """
    trusted = trusted_prefixes(trusted_modules)
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run directory {path} does not exist: pass run=<a training run directory with factors.pt>")
    factors = load_factors(path)
    for label, expected, found in (("generator", generator, factors["generator"]), ("layer", layer, factors["layer"])):
        if expected is not None and expected != found:
            raise ConfigError(
                f"factors in {path} were learnt for {label} '{found}', but {label} '{expected}' is configured"
            )
    if net is None:
        gen = generator_config(factors, path)
        check_trusted(gen, trusted, path)
        net = instantiate(gen.net)
    shape = net.check_layer(factors["layer"])
    if list(shape) != list(factors["feature_shape"]):
        raise ConfigError(
            f"factors in {path} were learnt on features {tuple(factors['feature_shape'])} at layer "
            f"'{factors['layer']}', but the rebuilt generator gives {shape} there"
        )
    return Factors(
        A=factors["A"].float(),
        P=factors["P"].float(),
        generator=net,
        name=factors["generator"],
        layer=factors["layer"],
        feature_shape=shape,
        labels=factors.get("labels"),
        canonical=factors.get(FORM) == CANONICAL,
    )


def generator_config(factors: dict[str, Any], source: Path) -> DictConfig:
    """The ``gen`` node that rebuilds the generator of ``factors`` (read from ``source``).

    It is ``conf/gen/<generator>.yaml`` with the plain values of the stored config's ``gen`` node
    merged in; a stored key the project's config lacks, a ``_target_`` (or other ``_..._`` key)
    other than the project's, or an interpolation in a stored string raise a :class:`ConfigError`.
    """
    name = factors["generator"]
    text = factors.get("config")
    if not isinstance(text, str) or not text:
        raise ConfigError(f"factors in {source} carry no training config, so their generator cannot be rebuilt")
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise ConfigError(f"the training config stored in {source} uses YAML aliases, which panda never writes")
        stored = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"the training config stored in {source} is not YAML ({error.__class__.__name__})") from None
    gen = stored.get("gen") if isinstance(stored, dict) else None
    if isinstance(gen, dict) and "net" in gen and gen["net"] is None:
        raise ConfigError(
            f"factors in {source} were learnt on a generator given to panda.fit as a Python object, which no config "
            "rebuilds: open them with panda.load(run, generator=<that generator>), or fit a generator config"
        )
    if not isinstance(gen, dict) or "net" not in gen:
        raise ConfigError(f"the training config stored in {source} has no gen.net node to rebuild the generator from")
    if name not in options("gen"):
        raise ConfigError(
            f"factors in {source} were learnt for generator '{name}', which has no config in conf/gen or "
            f"$PANDA_CONFIG_PATH (available: {', '.join(options('gen'))})"
        )
    if gen.get("name") != name:
        raise ConfigError(
            f"factors in {source} were learnt for generator '{name}', but their config is of {gen.get('name')!r}"
        )
    origin = f"conf/gen/{name}.yaml"
    composed = gen_config(name)
    merged = _merge_plain(OmegaConf.to_container(composed, resolve=False), gen, "gen", origin, source)
    resolved = OmegaConf.to_container(OmegaConf.create({"gen": composed}), resolve=True)["gen"]
    cache_name = (merged.get("net") or {}).get("cache_name")
    if cache_name != (resolved.get("net") or {}).get("cache_name"):
        raise ConfigError(f"gen.net.cache_name in the config stored in {source} is not the one of {origin}")
    _check_urls(merged, set(_strings(resolved)), cache_name, "gen", origin, source)
    return OmegaConf.create({"gen": merged}).gen


def trusted_prefixes(modules: Any) -> tuple[str, ...]:
    """``trusted_modules`` (a list of module names such as ``my_gan`` or ``lab.models``) as a tuple; a
    :class:`ConfigError` for anything else."""
    if isinstance(modules, str) or not isinstance(modules, Sequence):
        raise ConfigError(f"trusted_modules={modules!r} must be a list of module names, e.g. trusted_modules=[my_gan]")
    for module in modules:
        if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
            raise ConfigError(f"trusted_modules holds {module!r}, which is not a module name such as my_gan or lab.gan")
    return tuple(modules)


def check_trusted(gen: DictConfig, trusted: Sequence[str], source: Path) -> None:
    """A :class:`ConfigError`, naming the code and the setting that allows it, unless every ``_target_`` of the
    ``gen`` node lies in ``panda.generators`` or under one of the ``trusted`` module prefixes (``my_gan`` trusts
    ``my_gan.build`` and ``my_gan.nets.Tiny``, not ``my_gan_v2``)."""
    for target in _targets(OmegaConf.to_container(gen, resolve=False)):
        if not any(target == prefix or target.startswith(prefix + ".") for prefix in (PROJECT_MODULE, *trusted)):
            module = target.rpartition(".")[0] or target
            raise ConfigError(
                f"the generator of {source} is built by {target}, code outside panda's generators, which opening a run "
                f"runs only when trusted: if you trust module {module}, pass trusted_modules=[{module}]"
            )


def _targets(node: Any) -> Iterator[str]:
    """Every ``_target_`` value in ``node`` (nested mappings and lists)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield str(node["_target_"])
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _merge_plain(project: Any, stored: Any, key: str, origin: str, source: Path) -> Any:
    """``stored`` (a value of the file ``source``) merged into ``project`` (its value in ``origin``)."""
    if isinstance(project, dict):
        if not isinstance(stored, dict):
            raise ConfigError(f"{key} is a value in the config stored in {source}, but a mapping in {origin}")
        for name in sorted(stored, key=lambda n: n != "_target_"):  # the target first: it names the code
            if _is_special(name) and stored[name] != project.get(name):
                raise ConfigError(
                    f"{key}.{name} {repr(stored[name])[:80]} is not the one of {origin} ({project.get(name)!r}): "
                    f"a factors file does not choose the code that rebuilds its generator ({source})"
                )
        merged = dict(project)
        for name, value in stored.items():
            if name not in project:
                raise ConfigError(f"unknown key {key}.{name} in the config stored in {source}: {origin} has none")
            merged[name] = _merge_plain(project[name], value, f"{key}.{name}", origin, source)
        return merged
    if isinstance(stored, dict) and project is not None:
        raise ConfigError(f"{key} is a mapping in the config stored in {source}, but a value in {origin}")
    _check_plain(stored, key, source)
    return stored


def _strings(node: Any) -> list[str]:
    """Every string value in ``node`` (nested mappings and lists)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def _check_urls(node: Any, allowed: set[str], cache_name: str | None, key: str, origin: str, source: Path) -> None:
    """A :class:`ConfigError` for a URL in ``node`` that ``origin`` does not name and that is not downloaded already
    (as ``cache_name``, when the config names its file so): opening a run never fetches what its file names."""
    if isinstance(node, (dict, list)):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for name, value in items:
            _check_urls(value, allowed, cache_name, f"{key}.{name}", origin, source)
    elif isinstance(node, str) and is_url(node) and node not in allowed:
        cached = cached_path(node, cache_name)
        if not cached.is_file():
            raise ConfigError(
                f"{key} in the config stored in {source} names the URL {node}, which {origin} does not: opening a run "
                f"downloads nothing it names; to use that file, download it yourself and place it at {cached}"
            )


def _is_special(name: Any) -> bool:
    """Hydra's keys of instantiation: ``_target_``, ``_args_``, ``_partial_``, ..."""
    return isinstance(name, str) and len(name) > 2 and name.startswith("_") and name.endswith("_")


def _check_plain(value: Any, key: str, source: Path) -> None:
    """A stored value that replaces a value (or an empty node) of the project's config is plain data."""
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str) or _is_special(name):
                raise ConfigError(f"{key}.{name} in the config stored in {source} is not a plain key")
            _check_plain(item, f"{key}.{name}", source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{key}[{index}]", source)
    elif value == "???":
        raise ConfigError(f"{key} is missing ('???') in the config stored in {source}: it cannot rebuild the generator")
    elif isinstance(value, str) and "${" in value:
        raise ConfigError(f"{key} holds an interpolation ('${{'), which a loaded file may not use ({source})")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"{key} in the config stored in {source} is a {type(value).__name__}, not plain data")
