"""gpnat: Gaussian-process models trained with natural gradients.

Sparse variational GPs whose q(u) is stored in a parametrisation of your
choice, and a :class:`NaturalGradient` optimizer that steps in it, built on
TensorFlow and gpflow (float64 by default, through gpflow's config).
"""
from . import gaussian, parametrisations, recovery, schedules
from .models import SVGP, VGP
from .natgrad import NaturalGradient, NaturalGradientError, natural_gradient
from .parametrisations import (
    DiagonalExpectation,
    DiagonalMeanStd,
    DiagonalNatural,
    Expectation,
    MeanCholesky,
    MeanPrecisionCholesky,
    Natural,
    Parametrisation,
)
from .recovery import Recovery
from .training import History, train
from .variational import InvalidGaussianError, VariationalGaussian

__version__ = "0.1.0"

__all__ = [
    "SVGP",
    "VGP",
    "NaturalGradient",
    "NaturalGradientError",
    "natural_gradient",
    "Parametrisation",
    "MeanCholesky",
    "Natural",
    "Expectation",
    "MeanPrecisionCholesky",
    "DiagonalMeanStd",
    "DiagonalNatural",
    "DiagonalExpectation",
    "VariationalGaussian",
    "train",
    "Recovery",
    "History",
    "InvalidGaussianError",
    "gaussian",
    "parametrisations",
    "schedules",
    "recovery",
]
