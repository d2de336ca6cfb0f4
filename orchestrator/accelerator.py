"""What each Keras backend needs to share a machine's CPUs and GPUs between trials.

graftune trains through Keras 3, on TensorFlow by default. Keras runs the same
models on JAX or PyTorch too (``KERAS_BACKEND=jax`` or ``torch``, set before
graftune starts), which is how graftune runs where only those are installed:
a GPU machine with a CUDA build of JAX or PyTorch and no TensorFlow, say. The
three things a trial or the driver asks of the backend are here, once for
each backend:

- :func:`configure_trial`: threads to the trial's CPU share, and GPU memory
  taken as needed, not the whole card (fractional GPUs fail otherwise);
- :func:`share_gpu_memory`: the same for the driver, which builds models to
  check plugins and must not take the card from its trials;
- :func:`gpu_count`: how many GPUs this process sees.

Ray gives each trial its GPUs through ``CUDA_VISIBLE_DEVICES``, which all
three backends honour.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def backend() -> str:
    """Keras' backend (``tensorflow``, ``jax``, ``torch`` ...), without importing Keras.

    The same rule as Keras': ``KERAS_BACKEND``, else ``keras.json``, else
    TensorFlow. Once Keras is imported its answer wins.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    import json
    from pathlib import Path

    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found = json.loads((Path(home) / "keras.json").read_text()).get("backend")
        if isinstance(found, str) and found:
            return found
    return "tensorflow"


#: The module each Keras backend imports, and the pip package that installs it.
BACKEND_PACKAGES = {
    "tensorflow": ("tensorflow", "tensorflow"),
    "jax": ("jax", "jax"),
    "torch": ("torch", "torch"),
    "openvino": ("openvino", "openvino"),
}


def check_backend() -> None:
    """Refuse, before anything is written, a Keras backend that is not installed.

    Raises:
        BackendMissing: Naming the backend, where it was chosen and what to do.
    """
    import importlib.util

    from orchestrator.errors import BackendMissing

    name = backend()
    module, package = BACKEND_PACKAGES.get(name, (name, name))
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return
    # (Once Keras is imported its backend is installed: this is before that.)
    if os.environ.get("KERAS_BACKEND"):
        chosen = "KERAS_BACKEND"
    else:
        chosen = "keras.json" if name != "tensorflow" else "Keras' default"
    others = [b for b in ("tensorflow", "jax", "torch") if b != name]
    raise BackendMissing(
        f"Keras' backend is {name} ({chosen}), and {module} is not installed here: "
        f"pip install {package}, or set KERAS_BACKEND to a backend you have "
        f"({' or '.join(others)})"
    )


def configure_trial(cpus: float, gpus: float) -> None:
    """Set the backend's threads to the trial's CPU share, and GPU memory growth.

    Must run before the trial's first operation; in a reused worker the
    settings of its first trial stay, which is the same share.
    """
    threads = max(1, int(cpus))
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        # TensorFlow's warnings (retracing, say) are for whoever writes the model; in
        # an in-process search (keras_tuner) they would print over the progress view.
        tf.get_logger().setLevel(logging.ERROR)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:
            pass
    elif name == "torch":
        import torch

        with contextlib.suppress(RuntimeError):
            torch.set_num_threads(threads)
    if gpus:
        share_gpu_memory()


def share_gpu_memory() -> None:
    """Let this process take GPU memory as it needs it, not the whole card.

    TensorFlow and JAX otherwise take all (JAX: three quarters) of every GPU
    they see at their first operation, and the trials that share a GPU fail.
    The setting is fixed once the backend has used a GPU; it is then left as
    it is. PyTorch allocates as needed already.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            # Fails once TensorFlow has initialised the device; the setting is then fixed.
            with contextlib.suppress(RuntimeError, ValueError):
                tf.config.experimental.set_memory_growth(device, True)
    elif name == "jax":
        # Read when JAX starts its GPU client, at the first operation on a GPU.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def gpu_count() -> int:
    """How many GPUs the backend sees in this process (0 where it sees none)."""
    name = backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf

            return len(tf.config.list_physical_devices("GPU"))
        if name == "jax":
            share_gpu_memory()  # asking starts JAX's clients
            import jax

            return len(jax.devices("gpu"))
        if name == "torch":
            import torch

            return torch.cuda.device_count()
    except (RuntimeError, ImportError):  # JAX: "Unknown backend: 'gpu'" without one
        return 0
    return 0


__all__ = ["backend", "check_backend", "configure_trial", "gpu_count", "share_gpu_memory"]
