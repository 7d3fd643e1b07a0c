"""Pretrained generators behind one interface: :class:`FeatureGenerator`, loaded by :func:`load_generator`."""

from panda.generators.api import load_generator
from panda.generators.base import FeatureGenerator, ResumeState

__all__ = ["FeatureGenerator", "ResumeState", "load_generator"]
