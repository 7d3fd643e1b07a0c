"""The methods PandA is compared with on ROIR, each an :class:`Editor` with ranked directions.

``BASELINES`` maps the names used in configs (``eval.methods``) to their classes.
"""

from panda.roir.baselines.base import Baseline, Editor, Need
from panda.roir.baselines.ganspace import GANSpace
from panda.roir.baselines.jacobian import LowRankGAN, ReSeFa
from panda.roir.baselines.sefa import SeFa
from panda.roir.baselines.stylespace import StyleSpace

BASELINES: dict[str, type[Baseline]] = {cls.name: cls for cls in (GANSpace, SeFa, LowRankGAN, ReSeFa, StyleSpace)}

__all__ = ["BASELINES", "Baseline", "Editor", "GANSpace", "LowRankGAN", "Need", "ReSeFa", "SeFa", "StyleSpace"]
