"""What :func:`gpnat.train` keeps on a model between calls: its compiled loop.

Tracing the loop costs seconds (2.2 to 4.9 s for an SVGP with M = 20 to 500 on
two CPU cores, ``benchmarks/CALLS.md``), more than 100 iterations at M = 100,
and a notebook calls ``train`` again and again on one model. So the traced loop stays on the model, with the
objects it captured (Adam, the iteration counter, the recovery guard, the
default optimizer), and the next call with the same configuration reuses it
after resetting that state to what a fresh call starts from: a reused loop
gives bitwise the results of a new one, without tracing.

The configuration is a key of everything the trace bakes in: the mode and
the settings of ``train``, the data's row count, batch size and seed (the
data themselves are arguments of the loop, not part of it), gpflow's
float, int and jitter, the identity of each module, variable and trainable
variable of the model, and each module's plain Python attributes (e.g.
``num_data``, ``whiten``), read afresh at every call. A γ schedule other
than gpnat's own classes (say ``lambda t: settings["gamma"]``) may read
anything, so it is keyed by its traced graph too, traced at every call
(milliseconds): the Python values it reads are constants there, a
``tf.Variable`` it reads is not (:func:`schedule_graph`). Anything else changed,
or anything not a plain value reassigned, gives a new key: the loop is traced
anew and replaces the old one, so a model holds at most one. ``train`` under
a ``tf.distribute`` strategy, or with ``compile=False``, keeps nothing.
"""
from typing import Any, Callable, List, Optional, Tuple

import gpflow
import numpy as np
import tensorflow as tf

from ..schedules import Constant, IncreasingRate, LogLinear

__all__ = ["Compiled", "Configuration", "configuration", "forget", "keep", "lookup"]

_ATTRIBUTE = "_gpnat_compiled"
_PLAIN = (bool, int, float, str, bytes, type(None))


def schedule_graph(schedule, key: "Configuration") -> Tuple:
    """What the traced loop bakes in of a γ schedule that gpnat does not know: the graph of
    ``schedule(t)`` for an integer tensor t, with the Python values it reads as constants, and the
    identities of what it captures (a ``tf.Variable`` it reads is captured, not baked in: its value
    may change without a new trace). ``()`` for gpnat's schedules, whose plain attributes say it all;
    an error's type for one that cannot be traced (the call then reports it)."""
    if type(schedule) in (Constant, IncreasingRate, LogLinear):
        return ()
    def gamma_of(t):
        return tf.convert_to_tensor(schedule(t))

    spec = tf.TensorSpec([], tf.int64)
    for autograph in (False, True):  # with AutoGraph, as train retraces a loop whose code needs it
        try:
            traced = tf.function(gamma_of, autograph=autograph).get_concrete_function(spec)
            break
        except tf.errors.OperatorNotAllowedInGraphError as error:
            failure = type(error).__name__
        except Exception as error:  # noqa: BLE001 - only a key: train's own evaluation reports it
            return (type(error).__name__,)
    else:
        return (failure,)
    graph = traced.graph.as_graph_def().SerializeToString(deterministic=True)
    return (graph, tuple(key.identity(x) for x in traced.captured_inputs))


class Configuration:
    """A key of plain values and object identities, holding the objects it names.

    Identities are compared, so the objects must outlive the key: a freed
    object's ``id`` may be given to a new one, which would then pass for it.
    """

    def __init__(self):
        self.objects: list = []  # held, so that no id in the key is reused while the key lives
        self.value: Tuple = ()

    def identity(self, obj) -> Tuple:
        self.objects.append(obj)
        return ("id", id(obj))

    def attributes(self, obj) -> Tuple:
        """An object's attributes: plain values as they are, anything else by identity."""
        items = sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ()
        return tuple((k, v if isinstance(v, _PLAIN) else self.identity(v)) for k, v in items if k != _ATTRIBUTE)

    def modules(self, module: Optional[tf.Module]) -> Tuple:
        if module is None:
            return ()
        return tuple((self.identity(m), type(m).__qualname__, self.attributes(m))
                     for m in (module, *module.submodules))

    def variables(self, variables) -> Tuple:
        return tuple((self.identity(v), bool(v.trainable)) for v in variables)

    def __eq__(self, other) -> bool:
        return isinstance(other, Configuration) and self.value == other.value

    __hash__ = None  # compared, never hashed


def configuration(model, natgrad, default_natgrad: bool, **settings) -> Configuration:
    """The key of a traced loop: the model's structure and plain state, the optimizer's and ``train``'s settings."""
    key = Configuration()
    if natgrad is None:
        optimizer: Any = None
    elif default_natgrad:  # a new object each call: only its settings matter
        optimizer = ("default", repr(natgrad))
    else:  # the user's object, state and all
        optimizer = (key.modules(natgrad), key.attributes(natgrad.gamma), schedule_graph(natgrad.gamma, key))
    key.value = (
        type(model), key.modules(model), key.variables(model.variables), key.variables(model.trainable_variables),
        optimizer, gpflow.default_float(), gpflow.default_int(), gpflow.default_jitter(),
        tuple(sorted(settings.items())),
    )
    return key


class Compiled:
    """One traced loop and the state objects it captured.

    :param key: :func:`configuration` of the call that traced it.
    :param run: ``run(n, iterator, source)``, the compiled chunk of iterations.
    :param traced: how often the loop has been traced.
    :param release: what ``train`` frees after each call.
    :param objects: Adam, counter, guard, parts, … as ``train`` made them.
    :param fresh: variables to put back, each to the value it had when made
        (Adam's slots and step, the counter, the guard's counters, the default
        optimizer's state); the guard's snapshot is then taken afresh.
    """

    def __init__(self, key: Configuration, run: Callable, traced: Callable[[], int], release: Callable[[], None],
                 objects: dict, fresh: List[tf.Variable]):
        self.key, self.run, self.traced, self.release = key, run, traced, release
        self.objects = objects
        self._initial = [(v, np.array(v.numpy())) for v in fresh]

    def reset(self) -> None:
        """State as a fresh ``train`` call makes it; the guard's last good state is the model's now."""
        for variable, value in self._initial:
            variable.assign(value)
        self.objects["guard"].save()

    # copies of a model (gpflow.utilities.deepcopy) and pickles start without a traced loop
    def __deepcopy__(self, memo) -> None:
        return None

    def __reduce__(self):
        return (type(None), ())


def lookup(model, key: Configuration) -> Optional[Compiled]:
    """The loop traced for ``key`` on this model, its state reset, or None."""
    entry = getattr(model, _ATTRIBUTE, None)
    if not isinstance(entry, Compiled) or entry.key != key:
        return None
    entry.reset()
    return entry


def keep(model, entry: Compiled) -> None:
    """Keep ``entry`` on the model in place of any earlier one (set past tf.Module's tracking:
    the loop's optimizer and guard are not the model's variables)."""
    object.__setattr__(model, _ATTRIBUTE, entry)


def forget(model) -> None:
    """Drop the model's traced loop and what it holds: the next ``train`` call traces anew."""
    if _ATTRIBUTE in vars(model):
        object.__delattr__(model, _ATTRIBUTE)
