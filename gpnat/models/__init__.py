"""gpnat's models: how q(u) becomes q(f)."""
from .svgp import SVGP
from .vgp import VGP

__all__ = ["SVGP", "VGP"]
