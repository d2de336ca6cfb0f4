"""Model building blocks the strategies share: heads, regularisation, compiling.

Every layer used here is a built-in Keras layer, so saved models reload with
``safe_mode=True`` and without graftune installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import numpy as np

    from orchestrator.data import TaskSpec

#: Weight names that hold a layer's kernel (the weights λ regularises).
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def normalized_inputs(task: TaskSpec) -> tuple[Any, Any]:
    """An input of the task's shape, flattened and standardised with training statistics.

    Returns:
        ``(inputs, x)``: the model's input and the tensor to build on.
    """
    import keras

    inputs = keras.Input(task.input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(task.input_shape) > 1 else inputs
    mean = task.feature_mean.reshape(-1)
    variance = safe_variance(task.feature_var.reshape(-1))
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
    return inputs, x


def safe_variance(variance: np.ndarray) -> np.ndarray:
    """Variance with constant features set to 1: a feature never seen to vary in
    training must not be divided by ~0 when it does vary at test time."""
    import numpy as np

    return np.where(variance < 1e-8, 1.0, variance).astype("float32")


def pooled(x: Any) -> Any:
    """Global average pooling over feature maps; flattening for other ranks."""
    import keras

    if len(x.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if len(x.shape) > 2:
        return keras.layers.Flatten(name="pool")(x)
    return x


def classifier_head(x: Any, n_classes: int, *, width: int, depth: int, lambda_: float) -> Any:
    """``depth`` ReLU layers of ``width`` units and a softmax, all with L2 ``lambda_``."""
    import keras

    for i in range(depth):
        x = keras.layers.Dense(
            width,
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(lambda_) if lambda_ else None,
            name=f"head_dense{i + 1}",
        )(x)
    return keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(lambda_) if lambda_ else None,
        name="head_output",
    )(x)


def regularize_trainable_kernels(model: keras.Model, lambda_: float) -> int:
    """Put an L2 penalty of ``lambda_`` on the trainable kernels of an existing model.

    Keras adds a variable's regularizer to the loss only while the variable is
    trainable, so frozen layers contribute nothing.

    Returns:
        How many kernels were regularised.
    """
    import keras

    if not lambda_:
        return 0
    count = 0
    for layer in model.layers:
        if not layer.trainable:
            continue
        for variable in layer.trainable_weights:
            if variable.name in KERNEL_NAMES:
                variable.regularizer = keras.regularizers.L2(lambda_)
                count += 1
    return count


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    """Compile for integer class labels with Adam and an accuracy metric."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
