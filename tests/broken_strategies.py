"""Deliberately broken strategies, each breaking one rule of the Strategy contract.

The conformance check (``orchestrator.testing.check_strategy``) and the run's
pre-flight must reject each with a message naming it. Like any strategy
module, this one imports no TensorFlow at import time.
"""

from __future__ import annotations

import threading
from typing import Any

from orchestrator import ALL, Choice, Fixed, Int, LogFloat, Strategy, hookimpl
from orchestrator.builtin_plugins.feature_extraction import FeatureExtraction
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP

SMALL = {
    "hidden_layers": Fixed(1),
    "width": Fixed(8),
    "lambda": Fixed(0.0),
    "learning_rate": LogFloat(1e-3, 1e-2),
}


def one_dense_layer(
    task,
    units: int,
    *,
    activation: str | None = "softmax",
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
):
    """A compiled model of one dense layer over the flattened input, to break in
    one way each: its units, activation, loss or metrics."""
    import keras

    inputs = keras.Input(task.input_shape)
    outputs = keras.layers.Dense(units, activation=activation)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss, metrics=list(metrics))
    return model


class SmallMLP(ScratchMLP):
    """A correct strategy with a tiny space, to break in the subclasses."""

    name = "small_mlp"

    def search_space(self, context):
        return dict(SMALL)


class CamelName(SmallMLP):
    name = "CamelName"


class TakesABuiltinName(SmallMLP):
    name = "fine_tune"


class ForeignSpace(SmallMLP):
    """Declares a dimension as a plain tuple, as another tuning library might."""

    name = "foreign_space"

    def search_space(self, context):
        return {**SMALL, "learning_rate": ("loguniform", 1e-4, 1e-2)}


class AllWithoutABase(SmallMLP):
    """Counts a base's cut points ("all") in a space, and takes no base."""

    name = "all_without_a_base"

    def search_space(self, context):
        return {**SMALL, "hidden_layers": Int(1, ALL)}


class Uncompiled(SmallMLP):
    name = "uncompiled"

    def build(self, config, task, base):
        import keras

        model = super().build(config, task, base)
        return keras.Model(model.inputs, model.outputs)


class NoBuild(Strategy):
    """Declares its space and forgets build(): every trial failed, with an empty message."""

    name = "no_build"

    def search_space(self, context):
        return {"learning_rate": Fixed(1e-3)}


class WrongShape(SmallMLP):
    name = "wrong_shape"

    def build(self, config, task, base):

        return one_dense_layer(task, task.n_classes + 1)


class TaskInSpace(SmallMLP):
    """Bounds its space by the task, which validate's empty context lacks (found by QA)."""

    name = "task_in_space"

    def search_space(self, context):
        return {**SMALL, "width": Int(2, context.task.n_classes * 4)}


class MisspeltBuild(Strategy):
    """Its build() misspelt: validate passed it (found by QA)."""

    name = "misspelt_build"

    def search_space(self, context):
        return {"learning_rate": Fixed(1e-3)}

    def bulid(self, config, task, base):
        raise AssertionError("never called")


class FixedInput(SmallMLP):
    """Takes inputs of 4 features whatever the task (found by QA: every trial failed)."""

    name = "fixed_input"

    def build(self, config, task, base):
        import keras

        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(task.n_classes, activation="softmax")(inputs)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


class NoMetrics(SmallMLP):
    """Compiled without metrics: its epochs log no val_accuracy (found by QA)."""

    name = "no_metrics"

    def build(self, config, task, base):

        return one_dense_layer(task, task.n_classes, metrics=[])


class LogitsOut(SmallMLP):
    """Ends in logits: trained on a loss from logits, its "probabilities" went below 0."""

    name = "logits_out"

    def build(self, config, task, base):
        import keras

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return one_dense_layer(task, task.n_classes, activation=None, loss=loss)


class Unpicklable(SmallMLP):
    """Holds a lock, which no pickler can send to a Ray worker."""

    name = "unpicklable"

    def __init__(self) -> None:
        self.lock = threading.Lock()


class ForgetsCallbacks(SmallMLP):
    """Fits without the callbacks graftune passes (so no epoch would be reported)."""

    name = "forgets_callbacks"

    def fit(self, model, config, data, *, epochs, callbacks):
        model.fit(data.x_train, data.y_train, epochs=epochs, verbose=0)
        return model


class ForgetsCallbacksInItsSecondFit(SmallMLP):
    """Two phases, as fine_tune's, the second without the callbacks: its last epochs
    would never be reported, scored or stopped."""

    name = "forgets_callbacks_in_its_second_fit"

    def fit(self, model, config, data, *, epochs, callbacks):
        model.fit(
            data.x_train, data.y_train, epochs=1, callbacks=callbacks,
            validation_data=(data.x_val, data.y_val), verbose=0,
        )  # fmt: skip
        model.compile(model.optimizer.__class__(), model.loss, metrics=["accuracy"])
        model.fit(data.x_train, data.y_train, epochs=epochs - 1, verbose=0)
        return model


class OneEpochTooMany(SmallMLP):
    name = "one_epoch_too_many"

    def fit(self, model, config, data, *, epochs, callbacks):
        return super().fit(model, config, data, epochs=epochs + 1, callbacks=callbacks)


class FitsWithoutValidation(SmallMLP):
    name = "fits_without_validation"

    def fit(self, model, config, data, *, epochs, callbacks):
        model.fit(data.x_train, data.y_train, epochs=epochs, callbacks=callbacks, verbose=0)
        return model


class FitReturnsTheHistory(SmallMLP):
    """Returns what model.fit returns, not the model (found by QA: every trial failed)."""

    name = "fit_returns_the_history"

    def fit(self, model, config, data, *, epochs, callbacks):
        return model.fit(
            data.x_train, data.y_train, epochs=epochs, callbacks=callbacks,
            validation_data=(data.x_val, data.y_val), verbose=0,
        )  # fmt: skip


class FitTakesAnExtraArgument(SmallMLP):
    """A fit graftune cannot call (found by QA: Python's TypeError in every trial)."""

    name = "fit_takes_an_extra_argument"

    def fit(self, model, config, data, epochs, callbacks, extra):
        return model


class CategoricalLoss(SmallMLP):
    """Compiled with a loss for one-hot labels; graftune trains on class codes."""

    name = "categorical_loss"

    def build(self, config, task, base):

        return one_dense_layer(task, task.n_classes, loss="categorical_crossentropy")


class TenClassesAlways(SmallMLP):
    """Outputs the digits' 10 classes whatever the task."""

    name = "ten_classes_always"

    def build(self, config, task, base):

        return one_dense_layer(task, 10)


class DefaultsOutsideItsSpace(SmallMLP):
    """Starts its searches at a learning rate its own space does not take."""

    name = "defaults_outside_its_space"

    def default_config(self, context):
        return {"learning_rate": 0.5, "width": 999}  # width is fixed: anything goes


class NarrowsItsParentsSpace(SmallMLP):
    """Correct: replaces the space, and keeps scratch_mlp's defaults where they fit."""

    name = "narrows_its_parents_space"

    def search_space(self, context):
        return {**SMALL, "learning_rate": Choice((0.05, 0.1))}  # scratch_mlp starts at 1e-3


class DefaultsNotADict(SmallMLP):
    name = "defaults_not_a_dict"

    def default_config(self, context):
        return [("learning_rate", 1e-3)]


class KeysDiffer(SmallMLP):
    """Searches one more parameter once the data is prepared than validate sees."""

    name = "keys_differ"

    def search_space(self, context):
        extra = {"extra_units": Fixed(1)} if context.task is not None else {}
        return {**SMALL, **extra}


class RefusesItsOwnSpace(SmallMLP):
    """Its check_value refuses a learning rate its own space draws."""

    name = "refuses_its_own_space"

    def check_value(self, name, value):
        if name == "learning_rate" and value > 5e-3:
            raise ValueError("learning_rate must be at most 0.005")


class NamesALeaderboardColumn(SmallMLP):
    """Searches a parameter called ``epochs`` (found by QA: the leaderboard broke after training)."""

    name = "names_a_leaderboard_column"

    def search_space(self, context):
        return {**SMALL, "epochs": Choice((1, 2))}


class NotesAList(SmallMLP):
    """Its config_note returns a list (found by QA: validate ended in an internal error)."""

    name = "notes_a_list"

    def config_note(self, config, epochs):
        return ["a list note"]


class IgnoresTheCachedFeatures(FeatureExtraction):
    """Declares the whole base frozen but builds on the data's input, not on
    ``base.inputs_and_features``: a trial on cached features fails."""

    name = "ignores_the_cached_features"

    def search_space(self, context):
        return {
            "head_width": Fixed(8),
            "head_depth": Fixed(1),
            "lambda": Fixed(0.0),
            "learning_rate": Fixed(1e-2),
        }

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, pooled

        inputs = keras.Input(task.input_shape)
        features = pooled(base.model(base.adapt(inputs)))
        outputs = classifier_head(features, task.n_classes, width=8, depth=1, lambda_=0.0)
        return compile_classifier(keras.Model(inputs, outputs), 1e-2)


class UnregisteredLayer(SmallMLP):
    """Builds on a custom layer that no graftune_keras_objects hook returns: its
    saved model cannot be loaded."""

    name = "unregistered_layer"

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, normalized_inputs
        from tests.keras_layers import Shift

        inputs, x = normalized_inputs(task)
        x = Shift(0.5, name="shift")(x)
        outputs = classifier_head(x, task.n_classes, width=8, depth=1, lambda_=0.0)
        return compile_classifier(keras.Model(inputs, outputs), float(config["learning_rate"]))


class RegistersItsLayerInBuild(SmallMLP):
    """Registers its custom layer in ``build``: the trial's worker saves the model,
    but predict, which never runs the build, cannot load it."""

    name = "registers_its_layer_in_build"

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, normalized_inputs
        from tests.keras_layers import Shift

        registered = keras.saving.register_keras_serializable("in_build")(Shift)
        inputs, x = normalized_inputs(task)
        x = registered(0.5, name="shift")(x)
        outputs = classifier_head(x, task.n_classes, width=8, depth=1, lambda_=0.0)
        return compile_classifier(keras.Model(inputs, outputs), float(config["learning_rate"]))


class NeedsArguments(SmallMLP):
    """Its ``__init__`` takes an argument graftune cannot give: it makes strategies bare."""

    name = "needs_arguments"

    def __init__(self, width: int) -> None:
        self.width = width


class RaisesWhenMade(SmallMLP):
    name = "raises_when_made"

    def __init__(self) -> None:
        raise RuntimeError("no GPU here")


class Registers:
    """A plugin object that registers the strategy classes it is given."""

    def __init__(self, *classes: type) -> None:
        self.classes = classes

    @hookimpl
    def graftune_register_strategies(self, registry: Any) -> None:
        for cls in self.classes:
            registry.add(cls)
