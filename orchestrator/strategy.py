"""The Strategy base class: what a strategy plugin implements.

A strategy is a plain object that the host calls directly: it declares its
search space, builds one compiled Keras model per trial configuration and may
customise how that model is fitted. Constructors do no work and TensorFlow is
imported inside methods, so a strategy is cheap to create and pickles to Ray
workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import keras
    import numpy as np

    from orchestrator.bases import BaseInfo, LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension


@dataclass(frozen=True)
class SpaceContext:
    """What a strategy may look at when it declares its search space.

    Attributes:
        task: The task (input shape, classes), when the data is prepared; ``None``
            when a recipe is only being validated.
        base: The prepared base's summary (its number of cut points ...), or
            ``None`` when the recipe has no base or it is not prepared yet.
    """

    task: TaskSpec | None = None
    base: BaseInfo | None = None


@dataclass(frozen=True)
class FitData:
    """The arrays and settings one trial fits on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    batch_size: int


class Strategy:
    """Base class of every strategy plugin.

    Subclasses set :attr:`name` (snake_case, the same as their entry point and
    module) and implement :meth:`search_space` and :meth:`build`; they may
    override :meth:`fit` for multi-phase training.
    """

    #: The name recipes use under ``strategies:``.
    name: ClassVar[str] = ""
    #: One line for ``graftune plugins``.
    description: ClassVar[str] = ""
    #: Whether the strategy needs the recipe's ``base:``.
    requires_base: ClassVar[bool] = False

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        """Return this strategy's dimensions with their default ranges.

        Args:
            context: The task and base, as far as they are known.

        Returns:
            A mapping from parameter name to a dimension of :mod:`orchestrator.space`.
            The recipe may override or narrow any of them; keys it names that
            are not here are an error.
        """
        raise NotImplementedError(
            f"strategy {self.name!r} ({type(self).__name__}) has no search_space()"
        )

    def default_config(self, context: SpaceContext) -> dict[str, Any]:
        """A configuration known to work well, which a search tries first.

        With ``search.start_from_defaults`` (on unless the recipe turns it off),
        the first trial of a random or Bayesian search runs it, so every
        search tries it (and, unless a scheduler stops that trial early, ends
        no worse on validation), and the draws after it look for better. A value the recipe's space does not allow,
        and a dimension not named here, start at the dimension's middle
        (:func:`orchestrator.space.middle`). ``"all"`` stands for the base's
        number of cut points.

        Returns:
            Values for some or all of :meth:`search_space`'s dimensions; the
            default, ``{}``, starts every dimension at its middle.
        """
        return {}

    def check_value(self, name: str, value: Any) -> None:
        """Refuse a value this strategy can never take for parameter ``name``.

        Called before any work, with each value a recipe's space can give a
        parameter: every choice, a fixed value, both ends of a range. A
        recipe that asks for ``width: 0`` then stops at once at its key (exit
        status 2), instead of training nonsense or failing every trial. One
        parameter at a time: refuse what is wrong whatever the others are.
        (:func:`check_rules` checks a table of :func:`at_least`, :func:`above`
        and :func:`one_of` rules.)

        Raises:
            ValueError: Saying what the parameter takes. The default accepts everything.
        """

    def frozen_prefix(self, config: dict[str, Any], base: BaseInfo) -> int:
        """How many of the base's cut points stay frozen all through this configuration's training.

        That prefix is a pure function of its input: with the feature cache on
        (the default), the host computes its outputs once, stores them, and the
        trial trains only what lies above — the strategy must then build through
        :meth:`LoadedBase.inputs_and_features`. The default, 0, opts out.
        """
        return 0

    def config_note(self, config: dict[str, Any], epochs: int) -> str | None:
        """What a trial of ``config`` given ``epochs`` epochs does otherwise than its values say.

        Said in the trial's leaderboard ``note``, and, for each value a recipe's
        space can give (every choice, both ends of a range, the others at their
        smallest), by ``graftune validate`` and at a run's start, so that
        trials that train alike are not taken for different ones. The default,
        ``None``, says nothing.
        """
        return None

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        """Build and compile the model of one trial configuration.

        Args:
            config: One value for every dimension of the search space.
            task: The input shape, number of classes and training statistics.
            base: The pretrained base, freshly loaded for this trial, or ``None``.

        Returns:
            A compiled ``keras.Model`` whose output is ``(batch, task.n_classes)``
            class probabilities, trained with sparse integer labels and an
            ``accuracy`` metric.
        """
        raise NotImplementedError(f"strategy {self.name!r} ({type(self).__name__}) has no build()")

    def fit(
        self,
        model: keras.Model,
        config: dict[str, Any],
        data: FitData,
        *,
        epochs: int,
        callbacks: list[Any],
    ) -> keras.Model:
        """Train ``model``; the default is one ``model.fit`` over all epochs.

        Overrides must pass ``callbacks`` to every ``fit`` call they make (they
        report each epoch to the search and stop diverging trials) and must not
        run more than ``epochs`` epochs in all.

        Returns:
            The trained model (the one to evaluate and save; may be a new one).
        """
        from orchestrator.models import fit_arrays

        # One trace, one input iterator an epoch, validation on plain batches (same weights).
        fit_arrays(
            model,
            data.x_train,
            data.y_train,
            (data.x_val, data.y_val),
            epochs=epochs,
            batch_size=data.batch_size,
            callbacks=callbacks,
        )
        return model

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


# -- rules for Strategy.check_value ---------------------------------------------------

#: A rule: whether a value passes, and what the parameter takes.
Rule = tuple[Any, str]


def at_least(low: float) -> Rule:
    """A finite number ``>= low``."""
    return (lambda v: _number(v) and v >= low, f"a number >= {low:g}")


def above(low: float) -> Rule:
    """A finite number ``> low``."""
    return (lambda v: _number(v) and v > low, f"a number > {low:g}")


def one_of(*values: Any) -> Rule:
    """One of ``values`` (``True`` is not ``1``)."""
    return (
        lambda v: any(type(v) is type(w) and v == w for w in values),
        "one of " + ", ".join(map(repr, values)),
    )


def check_rules(rules: dict[str, Rule], name: str, value: Any) -> None:
    """:meth:`Strategy.check_value` from a table of rules (parameters without one pass).

    Raises:
        ValueError: ``name`` must be what its rule says.
    """
    rule = rules.get(name)
    if rule is not None and not rule[0](value):
        raise ValueError(f"{name} must be {rule[1]}, got {value!r}")


def _number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
