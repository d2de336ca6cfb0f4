"""``scratch_mlp``: a dense network trained from scratch on flattened inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import Choice, Int, LogFloat, Strategy, hookimpl
from orchestrator.strategy import above, at_least, check_rules

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension
    from orchestrator.strategy import SpaceContext


#: What each parameter can take at all (the search space is what is tried by default).
RULES = {
    "hidden_layers": at_least(0),
    "width": at_least(1),
    "lambda": at_least(0),
    "learning_rate": above(0),
}


class ScratchMLP(Strategy):
    """Standardised, flattened inputs -> ``hidden_layers`` × Dense(``width``) -> softmax."""

    name = "scratch_mlp"
    description = "a dense network trained from scratch on flattened inputs"
    requires_base = False

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        return {
            "hidden_layers": Int(1, 3),
            "width": Choice((32, 64, 128, 256)),
            "lambda": LogFloat(1e-6, 1e-2),
            "learning_rate": LogFloat(1e-4, 1e-2),
        }

    def default_config(self, context: SpaceContext) -> dict[str, Any]:
        """Two hidden layers of 128 with Adam at 1e-3 and light weight decay: a strong first
        try for small tabular or image data."""
        return {"hidden_layers": 2, "width": 128, "lambda": 1e-4, "learning_rate": 1e-3}

    def check_value(self, name: str, value: Any) -> None:
        check_rules(RULES, name, value)

    def build(self, config: dict[str, Any], task: TaskSpec, base: LoadedBase | None) -> keras.Model:
        import keras

        from orchestrator.models import classifier_head, compile_classifier, normalized_inputs

        inputs, x = normalized_inputs(task)
        outputs = classifier_head(
            x,
            task.n_classes,
            width=int(config["width"]),
            depth=int(config["hidden_layers"]),
            lambda_=float(config["lambda"]),
        )
        model = keras.Model(inputs, outputs, name="scratch_mlp")
        return compile_classifier(model, float(config["learning_rate"]))


@hookimpl
def graftune_register_strategies(registry: Any) -> None:
    registry.add(ScratchMLP)
