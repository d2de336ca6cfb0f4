"""``feature_extraction``: the whole pretrained base frozen, a new head trained on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import Choice, Int, LogFloat, Strategy, hookimpl
from orchestrator.strategy import above, at_least, check_rules

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import BaseInfo, LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension
    from orchestrator.strategy import SpaceContext


#: What each parameter can take at all (the search space is what is tried by default).
RULES = {
    "head_width": at_least(1),
    "head_depth": at_least(0),
    "lambda": at_least(0),
    "learning_rate": above(0),
}


class FeatureExtraction(Strategy):
    """Inputs -> adapter -> frozen base (inference mode) -> pooling -> head.

    The whole base is a frozen prefix, so with the feature cache on its outputs
    are computed once and every trial trains only the head.
    """

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

    def default_config(self, context: SpaceContext) -> dict[str, Any]:
        """One hidden layer of 256 on the pooled features, Adam at 1e-3, light weight decay."""
        return {"head_width": 256, "head_depth": 1, "lambda": 1e-4, "learning_rate": 1e-3}

    def check_value(self, name: str, value: Any) -> None:
        check_rules(RULES, name, value)

    def frozen_prefix(self, config: dict[str, Any], base: BaseInfo) -> int:
        return base.n_cut_points

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        import keras

        from orchestrator.models import classifier_head, compile_classifier, pooled

        if base is None:
            raise ValueError("feature_extraction needs a base")
        # Freezing every cut point also keeps BatchNormalization in inference mode.
        inputs, features = base.inputs_and_features(task, base.info.n_cut_points)
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
