"""``linear_probe``: one softmax layer on standardised features of a frozen base.

The classic test of how much a pretrained representation already knows: the
whole base is frozen (BatchNorm in inference mode), its features are pooled
and standardised with statistics of the training split, and a single dense
softmax layer with an L2 penalty λ is trained on them. No hidden layer, unlike
graftune's ``feature_extraction``.

The standardisation statistics are computed in :meth:`LinearProbe.fit`, from
the training data the trial receives, which shows the optional ``fit`` hook of
a strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import Choice, LogFloat, Strategy, hookimpl
from orchestrator.strategy import above, at_least, check_rules, one_of

if TYPE_CHECKING:
    import keras

    from orchestrator import FitData, SpaceContext
    from orchestrator.bases import LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.registry import Registry
    from orchestrator.space import Dimension

#: The layer whose statistics fit() sets; its input is the pooled features.
STANDARDIZE = "probe_standardize"

#: What each parameter can take at all: a recipe asking for another value (a
#: misspelt pooling trained as avg and was recorded as asked, found by QA) is
#: refused at its key by validate and run, exit 2, before anything trains.
RULES = {
    "pooling": one_of("avg", "max", "none"),
    "lambda": at_least(0),
    "learning_rate": above(0),
}


class LinearProbe(Strategy):
    """Inputs -> adapter -> frozen base -> pooling -> standardise -> softmax (L2)."""

    name = "linear_probe"
    description = "frozen base, standardised pooled features, one softmax layer with L2"
    requires_base = True

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        # Pooling applies to a grid of features (height, width, channels). A base
        # whose output is a vector has none to pool: "avg" and "max" trained the
        # same model twice (found by QA), so there is nothing to search.
        flat = context.base is not None and len(context.base.output_shape) != 3
        return {
            "pooling": Choice(("none",) if flat else ("avg", "max")),
            "lambda": LogFloat(1e-6, 1e-1),
            "learning_rate": LogFloat(1e-3, 3e-2),
        }

    def check_value(self, name: str, value: Any) -> None:
        check_rules(RULES, name, value)

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        import keras

        if base is None:
            raise ValueError("linear_probe needs a base: add a base: section to the recipe")
        base.model.trainable = False
        inputs = keras.Input(task.input_shape, name="inputs")
        # A non-trainable base runs its BatchNormalization layers in inference mode.
        features = base.model(base.adapt(inputs), training=False)
        if (len(features.shape) == 4) != (config["pooling"] != "none"):
            raise ValueError(
                f"pooling {config['pooling']!r} does not fit the base's output "
                f"{tuple(features.shape[1:])}: avg or max pools a grid of features "
                "(height, width, channels), none is for any other output; leave pooling "
                "out of the recipe, and linear_probe takes what fits"
            )
        if len(features.shape) == 4:
            pool = (
                keras.layers.GlobalMaxPooling2D
                if config["pooling"] == "max"
                else keras.layers.GlobalAveragePooling2D
            )
            features = pool(name="probe_pool")(features)
        elif len(features.shape) > 2:
            features = keras.layers.Flatten(name="probe_pool")(features)
        features = keras.layers.Normalization(axis=-1, name=STANDARDIZE)(features)
        lambda_ = float(config["lambda"])
        outputs = keras.layers.Dense(
            task.n_classes,
            activation="softmax",
            kernel_regularizer=keras.regularizers.L2(lambda_) if lambda_ else None,
            name="probe_output",
        )(features)
        model = keras.Model(inputs, outputs, name="linear_probe")
        model.compile(
            optimizer=keras.optimizers.Adam(float(config["learning_rate"])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(
        self,
        model: keras.Model,
        config: dict[str, Any],
        data: FitData,
        *,
        epochs: int,
        callbacks: list[Any],
    ) -> keras.Model:
        """Standardise with the training features' statistics, then train as usual."""
        import keras

        standardize = model.get_layer(STANDARDIZE)
        features = keras.Model(model.inputs, standardize.input)
        standardize.adapt(features.predict(data.x_train, batch_size=256, verbose=0))
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


@hookimpl
def graftune_register_strategies(registry: Registry) -> None:
    registry.add(LinearProbe)
