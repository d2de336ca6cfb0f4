"""``feature_extraction``: the whole pretrained base frozen, a new head trained on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import Choice, Int, LogFloat, Strategy, hookimpl

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension
    from orchestrator.strategy import SpaceContext


class FeatureExtraction(Strategy):
    """Inputs -> adapter -> frozen base (inference mode) -> pooling -> head."""

    name = "feature_extraction"
    description = "frozen pretrained base (BatchNorm in inference mode) + a new dense head"
    requires_base = True

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        return {
            "head_width": Choice((64, 128, 256, 512)),
            "head_depth": Int(1, 2),
            "lambda": LogFloat(1e-6, 1e-2),
            "learning_rate": LogFloat(1e-4, 1e-2),
        }

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        import keras

        from orchestrator.models import classifier_head, compile_classifier, pooled

        if base is None:
            raise ValueError("feature_extraction needs a base")
        base.model.trainable = False
        inputs = keras.Input(task.input_shape, name="inputs")
        # A non-trainable BatchNormalization runs in inference mode, whatever fit() passes.
        features = base.model(base.adapt(inputs), training=False)
        outputs = classifier_head(
            pooled(features),
            task.n_classes,
            width=int(config["head_width"]),
            depth=int(config["head_depth"]),
            lambda_=float(config["lambda"]),
        )
        model = keras.Model(inputs, outputs, name="feature_extraction")
        return compile_classifier(model, float(config["learning_rate"]))


@hookimpl
def graftune_register_strategies(registry: Any) -> None:
    registry.add(FeatureExtraction)
