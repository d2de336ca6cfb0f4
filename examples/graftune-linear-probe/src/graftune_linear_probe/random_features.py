"""``random_features``: a base of random ReLU features, drawn from the run's seed.

``base: {provider: random_features, options: {inputs: 16}}`` gives a frozen
random network: ``depth`` dense ReLU layers of ``width`` units whose weights are
drawn once, never trained (random features, Rahimi & Recht 2007; an "extreme
learning machine" when a linear layer is trained on them). It is the baseline a
pretrained base must beat: ``linear_probe`` on it is a linear model on random
features, with no transfer at all. Options (``base: {options: {...}}``):

- ``inputs``: how many features an example has (required; images are flattened
  to ``height * width * channels``);
- ``width``: units per layer (default 256);
- ``depth``: layers (default 1); each is a cut point, so ``fine_tune`` can train
  the upper ones.

It shows the three rules of a base provider: ``build`` draws its weights from
``context.seed``, so a resume that builds it again gets the same base;
``cache_key`` holds everything ``build`` reads (its options, the seed and this
plugin's version), so a run of another seed does not reuse this one's base; and
the module imports no Keras until ``build`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import hookimpl
from orchestrator.bases import BaseProvider
from orchestrator.errors import BaseModelError

if TYPE_CHECKING:
    import keras

    from orchestrator.bases import BaseContext
    from orchestrator.recipe import BaseSpec
    from orchestrator.registry import Registry

#: Each option with its default (``inputs`` has none).
OPTIONS = {"inputs": None, "width": 256, "depth": 1}
#: Goes into the cache key: a version that draws other weights must change it.
DRAWING = 1


class RandomFeatures(BaseProvider):
    """``depth`` dense ReLU layers with random, fixed weights (He-normal, from the seed)."""

    name = "random_features"
    description = "random ReLU features drawn from the seed, the no-transfer baseline"

    def check(self, spec: BaseSpec) -> None:
        self._options(spec)

    def cache_key(self, spec: BaseSpec, context: BaseContext) -> str:
        options = self._options(spec)
        return f"random_features-{DRAWING}-{sorted(options.items())}-seed{context.seed}"

    def build(self, spec: BaseSpec, context: BaseContext) -> keras.Model:
        import keras

        options = self._options(spec)
        keras.utils.set_random_seed(context.seed)  # the same weights for the same seed
        inputs = keras.Input((options["inputs"],), name="features_in")
        x = inputs
        for i in range(options["depth"]):
            x = keras.layers.Dense(
                options["width"],
                activation="relu",
                kernel_initializer="he_normal",
                name=f"random_{i + 1}",
            )(x)
        return keras.Model(inputs, x, name="random_features")

    @staticmethod
    def _options(spec: BaseSpec) -> dict[str, Any]:
        given = dict(spec.options or {})
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise BaseModelError(
                f"random_features: unknown option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(OPTIONS)}",
                key="options",
            )
        options = {**OPTIONS, **given}
        for key, least in (("inputs", 1), ("width", 1), ("depth", 1)):
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                needed = " (how many features an example has)" if key == "inputs" else ""
                raise BaseModelError(
                    f"random_features: {key} must be an integer >= {least}{needed}; got {value!r}",
                    key="options",
                )
        return options


@hookimpl
def graftune_register_bases(registry: Registry) -> None:
    registry.add(RandomFeatures)
