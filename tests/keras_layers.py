"""A custom Keras layer, in a module of its own, as a plugin would keep it: the
plugin imports it only where Keras is needed (its strategy's ``build`` and its
``graftune_keras_objects`` hook). Not registered with Keras here: the hook does it."""

from __future__ import annotations

from typing import Any

import keras


class Scale(keras.layers.Layer):
    """Multiplies by a constant: Keras loads it only once it is registered."""

    def __init__(self, factor: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x: Any) -> Any:
        return x * self.factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


class Shift(keras.layers.Layer):
    """Adds a constant; no plugin registers it, so a model with it cannot be loaded."""

    def __init__(self, offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, x: Any) -> Any:
        return x + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "offset": self.offset}


def halved_relu(x: Any) -> Any:
    """An activation function, as a plugin would register one: Keras saves it by name."""
    return keras.ops.relu(x) * 0.5
