"""``fine_tune``: the base's first ``frozen_layers`` cut points frozen, the rest trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import ALL, Choice, Int, LogFloat, Strategy, hookimpl
from orchestrator.strategy import above, at_least, check_rules, one_of

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import BaseInfo, LoadedBase
    from orchestrator.data import TaskSpec
    from orchestrator.space import Dimension
    from orchestrator.strategy import FitData, SpaceContext

#: The share of the epochs a two-phase trial spends on the head alone.
HEAD_PHASE_SHARE = 0.25
#: How much lower the learning rate is once the base is unfrozen.
FINE_TUNE_LR_FACTOR = 0.1


#: What each parameter can take at all (the search space is what is tried by default;
#: frozen_layers is checked against the base's cut points once it is prepared).
RULES = {
    "frozen_layers": at_least(0),
    "head_width": at_least(1),
    "regularizer": one_of("l2", "l2sp"),
    "lambda": at_least(0),
    "learning_rate": above(0),
    "two_phase": one_of(False, True),
}


class FineTune(Strategy):
    """Inputs -> adapter -> base (partly frozen) -> pooling -> head.

    ``frozen_layers`` counts the base's cut points from the input (see
    :mod:`orchestrator.bases`), so a residual block is never split. Every
    BatchNormalization layer stays frozen, in inference mode.

    λ has two forms, searched as ``regularizer``: ``l2`` puts ``λ·‖w‖²`` on every
    trainable kernel; ``l2sp`` puts ``λ·‖w − w⁰‖²`` on the base's trainable
    kernels (``w⁰`` their pretrained values) and ``λ·‖w‖²`` on the new head — that
    is α = β = 2λ in Li et al.'s notation (``α/2·‖w − w⁰‖² + β/2·‖w‖²``), so the
    two forms differ only in where the base's weights are pulled to.

    ``two_phase``: first train the head for a quarter of the epochs with the
    whole base frozen, then unfreeze down to ``frozen_layers`` and train the
    rest at a tenth of the learning rate, recompiling in between (the recipe of
    Keras' transfer-learning guide).
    """

    name = "fine_tune"
    description = "pretrained base with its first frozen_layers cut points frozen, the rest trained"
    requires_base = True

    def search_space(self, context: SpaceContext) -> dict[str, Dimension]:
        return {
            "frozen_layers": Int(0, ALL),
            "head_width": Choice((64, 128, 256)),
            "regularizer": Choice(("l2", "l2sp")),
            "lambda": LogFloat(1e-6, 1e-2),
            "learning_rate": LogFloat(1e-4, 3e-3),
            "two_phase": Choice((False, True)),
        }

    def default_config(self, context: SpaceContext) -> dict[str, Any]:
        """Plain fine-tuning of the whole base with Adam at 1e-3 and light L2.

        The usual baseline of the literature (Li et al. 2018's "standard
        fine-tuning"), and on glyphs -> digits with 10 labels per class the
        best single configuration of the freezing profile
        (``benchmarks/results/transfer_profile.md``).
        """
        return {
            "frozen_layers": 0,
            "head_width": 128,
            "regularizer": "l2",
            "lambda": 1e-4,
            "learning_rate": 1e-3,
            "two_phase": False,
        }

    def check_value(self, name: str, value: Any) -> None:
        check_rules(RULES, name, value)

    def config_note(self, config: dict[str, Any], epochs: int) -> str | None:
        if config.get("two_phase") and epochs < 2:  # fit() has no epoch for a second phase
            return (
                f"two_phase needs at least 2 epochs, and a trial has {epochs}: trained in one phase"
            )
        return None

    def frozen_prefix(self, config: dict[str, Any], base: BaseInfo) -> int:
        # The first frozen_layers cut points stay frozen in both phases.
        return int(config["frozen_layers"])

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
        frozen = int(config["frozen_layers"])
        inputs, features = base.inputs_and_features(task, frozen)
        if frozen < base.info.n_cut_points:
            # (With the whole base frozen there is nothing of it to regularise, and
            # a trial on features cached at its output need not load it.) The
            # penalties the base was saved with came off as it was loaded.
            regularize_trainable_kernels(base.model, lambda_, config.get("regularizer", "l2"))
        outputs = classifier_head(
            pooled(features),
            task.n_classes,
            width=int(config["head_width"]),
            depth=1,
            lambda_=lambda_,
        )
        model = keras.Model(inputs, outputs, name="fine_tune")
        # fit() needs the base to refreeze it between the phases.
        model._graftune_base = base
        return compile_classifier(model, float(config["learning_rate"]))

    def fit(
        self,
        model: keras.Model,
        config: dict[str, Any],
        data: FitData,
        *,
        epochs: int,
        callbacks: list[Any],
    ) -> keras.Model:
        if not config.get("two_phase") or epochs < 2:
            return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)
        from orchestrator.models import (
            clear_regularizers,
            compile_classifier,
            regularize_trainable_kernels,
        )

        base: LoadedBase = model._graftune_base
        learning_rate = float(config["learning_rate"])
        head_epochs = max(1, round(epochs * HEAD_PHASE_SHARE))
        # Phase 1: the head alone on the frozen base.
        base.freeze(base.info.n_cut_points)
        compile_classifier(model, learning_rate)
        super().fit(model, config, data, epochs=head_epochs, callbacks=callbacks)
        if model.stop_training:
            return model
        # Phase 2: unfreeze down to frozen_layers, at a lower learning rate.
        base.freeze(int(config["frozen_layers"]))
        clear_regularizers(base.model)
        regularize_trainable_kernels(
            base.model, float(config["lambda"]), config.get("regularizer", "l2")
        )
        compile_classifier(model, learning_rate * FINE_TUNE_LR_FACTOR)
        return super().fit(model, config, data, epochs=epochs - head_epochs, callbacks=callbacks)


@hookimpl
def graftune_register_strategies(registry: Any) -> None:
    registry.add(FineTune)
