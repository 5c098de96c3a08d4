"""gpnat's models: how q(u) becomes q(f)."""
from .svgp import SVGP

__all__ = ["SVGP"]
