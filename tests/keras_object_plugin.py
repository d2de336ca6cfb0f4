"""A plugin whose strategy's model holds a custom layer (``tests.keras_layers``),
imported only where Keras is needed, and given to graftune by
``graftune_keras_objects`` so that a saved model loads again anywhere."""

from __future__ import annotations

from typing import Any

from orchestrator import hookimpl
from tests.broken_strategies import SmallMLP


class ScaledMLP(SmallMLP):
    name = "scaled_mlp"

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, normalized_inputs
        from tests.keras_layers import Scale

        inputs, x = normalized_inputs(task)
        x = Scale(0.5, name="scale")(x)
        outputs = classifier_head(
            x, task.n_classes, width=int(config["width"]), depth=1, lambda_=0.0
        )
        model = keras.Model(inputs, outputs)
        return compile_classifier(model, float(config["learning_rate"]))


@hookimpl
def graftune_register_strategies(registry: Any) -> None:
    registry.add(ScaledMLP)


@hookimpl
def graftune_keras_objects() -> list[Any]:
    from tests.keras_layers import Scale

    return [Scale]
