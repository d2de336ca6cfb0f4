"""``fine_tune``: the base's first ``frozen_layers`` cut points frozen, the rest trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import ALL, Choice, Int, LogFloat, Strategy, hookimpl

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension
    from orchestrator.strategy import SpaceContext


class FineTune(Strategy):
    """Inputs -> adapter -> base (partly frozen, BatchNorm in inference mode) -> head.

    ``frozen_layers`` counts the base's cut points from the input (see
    :mod:`orchestrator.bases`), so a residual block is never split. Batch
    normalization stays in inference mode, frozen, throughout the base. λ is an
    L2 penalty on every trainable kernel, the base's and the head's.
    """

    name = "fine_tune"
    description = "pretrained base with its first frozen_layers cut points frozen, the rest trained"
    requires_base = True

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        return {
            "frozen_layers": Int(0, ALL),
            "head_width": Choice((64, 128, 256)),
            "lambda": LogFloat(1e-6, 1e-2),
            "learning_rate": LogFloat(1e-4, 3e-3),
        }

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        import keras

        from orchestrator.models import (
            classifier_head,
            compile_classifier,
            pooled,
            regularize_trainable_kernels,
        )

        if base is None:
            raise ValueError("fine_tune needs a base")
        lambda_ = float(config["lambda"])
        base.freeze(int(config["frozen_layers"]))
        regularize_trainable_kernels(base.model, lambda_)
        inputs = keras.Input(task.input_shape, name="inputs")
        # freeze() keeps every BatchNormalization layer non-trainable, the only way to
        # keep it in inference mode under Keras 3's fit(); training=False alone is not.
        features = base.model(base.adapt(inputs), training=False)
        outputs = classifier_head(
            pooled(features),
            task.n_classes,
            width=int(config["head_width"]),
            depth=1,
            lambda_=lambda_,
        )
        model = keras.Model(inputs, outputs, name="fine_tune")
        return compile_classifier(model, float(config["learning_rate"]))


@hookimpl
def graftune_register_strategies(registry: Any) -> None:
    registry.add(FineTune)
