"""Data sources and base providers for the testing kit's checks, each kept or broken
in one way a plugin author might break one (``tests/test_testing_kit.py``). Free of
Keras at import, as a plugin's module should be."""

from __future__ import annotations

import uuid

import numpy as np

from orchestrator.bases import BaseProvider
from orchestrator.data import DataSource, LabelledArrays


class Blobs(DataSource):
    """Two blobs of 4 features, drawn from the run's seed: keeps the contract."""

    scheme = "qa_blobs"
    uses_seed = True

    def load(self, location, spec, base_dir, *, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(60) % 2
        x = rng.normal(size=(60, 4)).astype("float32") + y[:, None]
        return LabelledArrays(x, y, ("left", "right"))


class Unseeded(Blobs):
    """Draws its examples at random, but not from the seed."""

    scheme = "qa_unseeded"
    uses_seed = False

    def load(self, location, spec, base_dir):
        return super().load(location, spec, base_dir, seed=None)


class Bytes(DataSource):
    """Images of 0..255, not divided by 255."""

    scheme = "qa_bytes"

    def load(self, location, spec, base_dir):
        x = np.tile(np.arange(64, dtype="float32").reshape(1, 8, 8, 1) * 4, (40, 1, 1, 1))
        return LabelledArrays(x, np.arange(40) % 2, ("a", "b"))


class TakenScheme(Blobs):
    scheme = "csv"


class Seeded(BaseProvider):
    """A small dense base drawn from context.seed, its key holding the seed."""

    name = "qa_seeded"

    def cache_key(self, spec, context):
        return f"qa_seeded-1-seed{context.seed}"

    def build(self, spec, context):
        import keras

        keras.utils.set_random_seed(context.seed)
        inputs = keras.Input((8, 8, 1))
        features = keras.layers.Dense(6, activation="relu", name="features")(
            keras.layers.Flatten()(inputs)
        )
        return keras.Model(inputs, features)


class SeedlessKey(Seeded):
    """Draws from context.seed, but its key does not hold it."""

    name = "qa_seedless_key"

    def cache_key(self, spec, context):
        return "qa_seedless_key-1"


class Unrepeatable(Seeded):
    """Draws its weights from no seed."""

    name = "qa_unrepeatable"

    def build(self, spec, context):
        model = super().build(spec, context)
        rng = np.random.default_rng()
        model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
        return model


class NewKeyEachTime(Seeded):
    name = "qa_new_key"

    def cache_key(self, spec, context):
        return str(uuid.uuid4())


class ScaledBase(Seeded):
    """Holds a custom layer (tests.keras_layers.Scale), which tests.keras_object_plugin's
    graftune_keras_objects gives to graftune."""

    name = "qa_scaled"

    def build(self, spec, context):
        import keras

        from tests.keras_layers import Scale

        keras.utils.set_random_seed(context.seed)
        inputs = keras.Input((8, 8, 1))
        return keras.Model(inputs, keras.layers.Flatten()(Scale(0.5)(inputs)))
