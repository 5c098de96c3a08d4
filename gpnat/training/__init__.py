r"""Hybrid training: natural-gradient steps on q(u) with Adam on everything else.

:func:`train` runs the recipe of Salimbeni, Eleftheriadis & Hensman (2018):
each iteration takes a natural-gradient step on every q(u) of the model and an
Adam step on all other trainable variables (kernel, likelihood, inducing
inputs, mean function). Many iterations run inside one compiled call.

Modes (chosen by the arguments; one step function each in :mod:`~gpnat.training.steps`):

* fused (the default wherever both optimizers train): one loss-and-gradient
  evaluation feeds both updates;
* alternating (``fused=False``): natural-gradient step, then an Adam step
  evaluated at the updated q(u) (two loss-and-gradient evaluations);
* Adam-only (``natgrad=None``): Adam on all trainable variables, q(u) included;
* natgrad-only (``adam_lr=None``): hyperparameters stay fixed.

The package: ``loop`` (:func:`train`), ``steps`` (one function per mode),
``batches`` (data), ``cache`` (the traced loop a model keeps for the next call),
``checkpoints``, ``history`` (:class:`History`),
``distributed`` (data-parallel training on ``tf.distribute``, ``train(strategy=...)``).
"""
from ..variational import variational_distributions
from .history import History
from .loop import train

__all__ = ["train", "History", "variational_distributions"]
