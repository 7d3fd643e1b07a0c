"""Pretrained generators behind one interface: :class:`FeatureGenerator`."""

from panda.generators.base import FeatureGenerator

__all__ = ["FeatureGenerator"]
