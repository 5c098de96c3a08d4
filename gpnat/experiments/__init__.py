"""The experiments of Salimbeni, Eleftheriadis & Hensman (2018), "Natural Gradients in Practice".

Each experiment is one function whose settings live in one dataclass (with
``quick()`` and ``tiny()`` variants); ``gpnat reproduce`` (:mod:`.cli`) runs
them and writes CSV, Markdown and PNG results (:mod:`.report`):

* :func:`run_conjugate` (:class:`ConjugateSettings`): SVGP regression on UCI
  sets, Adam-only against natural gradients + Adam, full batch and minibatch;
* :func:`run_ill_conditioning` (:class:`IllConditioningSettings`): iterations
  and seconds to reach the SGPR optimum as the likelihood variance shrinks;
* :func:`run_nonconjugate` (:class:`NonConjugateSettings`): Bernoulli,
  MultiClass, Student-t and Poisson likelihoods; parametrisations × γ schedules.

Every finished cell (experiment × data set × method × split) is saved as one
JSON file and read back, not recomputed, by a later run into the same folder.
"""
from .conjugate import ConjugateSettings, run_conjugate
from .ill_conditioning import IllConditioningSettings, run_ill_conditioning
from .nonconjugate import NonConjugateSettings, run_nonconjugate

__all__ = [
    "reproduce",
    "ConjugateSettings",
    "run_conjugate",
    "IllConditioningSettings",
    "run_ill_conditioning",
    "NonConjugateSettings",
    "run_nonconjugate",
]


def __getattr__(name):
    """``reproduce`` is imported from :mod:`.cli` when first asked for: importing the package does not
    import the module that ``python -m gpnat.experiments.cli`` runs (Python warns when it was)."""
    if name == "reproduce":
        from .cli import reproduce

        return reproduce
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
