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
- :func:`gpu_count`: how many GPUs this process sees;
- :func:`quiet_tensorflow`: TensorFlow's warnings off the user's console.

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
    return _choice()[0]


#: Where a backend was chosen when neither ``KERAS_BACKEND`` nor ``keras.json`` says.
DEFAULT = "Keras' default"


def _choice() -> tuple[str, str]:
    """Keras' backend by Keras' rule, and where it was chosen (a variable, a file, the default)."""
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen, "KERAS_BACKEND"
    import json
    from pathlib import Path

    path = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found = json.loads(path.read_text()).get("backend")
        if isinstance(found, str) and found:
            return found, str(path)
    return "tensorflow", DEFAULT


def chosen_backend() -> tuple[str, str] | None:
    """The backend the user chose here and where (``KERAS_BACKEND``, a ``keras.json``).

    ``None`` for Keras' default. The trials of a run use the backend chosen
    where it started (:func:`use_backend`): a cluster's nodes do not see the
    driver's environment or its ``keras.json``.
    """
    where = _choice()[1]
    return None if where == DEFAULT else (backend(), where)


#: The module each Keras backend imports, and the pip package that installs it.
BACKEND_PACKAGES = {
    "tensorflow": ("tensorflow", "tensorflow"),
    "jax": ("jax", "jax"),
    "torch": ("torch", "torch"),
    "numpy": ("numpy", "numpy"),
    "openvino": ("openvino", "openvino"),
}
#: The backends Keras can train on; ``numpy`` and ``openvino`` only predict.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")


def check_backend(*, training: bool = True) -> None:
    """Refuse, before anything is written, a Keras backend that cannot do the job here.

    A name Keras does not know, a backend that is not installed, and, where
    ``training``, one that cannot train (``numpy``, ``openvino``).

    Raises:
        BackendMissing: Naming the backend, where it was chosen and what to do.
    """
    from orchestrator.errors import BackendMissing

    name, where = _choice()
    if "keras" in sys.modules:  # imported: its backend is the one in use, and installed
        name = backend()
    if name not in BACKEND_PACKAGES:
        if name.lower() in BACKEND_PACKAGES:
            hint = f"backend names are lower case: {name.lower()}"
        else:
            hint = f"choose one of {', '.join(TRAINING_BACKENDS)}"
        raise BackendMissing(f"Keras' backend {name!r} ({where}) is not a Keras backend: {hint}")
    if training and name not in TRAINING_BACKENDS:
        raise BackendMissing(
            f"Keras' backend is {name} ({where}), which cannot train models: "
            f"set KERAS_BACKEND to {_installed_hint(name)}"
        )
    module, package = BACKEND_PACKAGES[name]
    if _installed(module):
        return
    raise BackendMissing(
        f"Keras' backend is {name} ({where}), and {module} is not installed here: "
        f"pip install {package}, or set KERAS_BACKEND to {_installed_hint(name)}"
    )


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _installed_hint(name: str) -> str:
    """The training backends installed here besides ``name``, or what to install."""
    have = [b for b in TRAINING_BACKENDS if b != name and _installed(BACKEND_PACKAGES[b][0])]
    if have:
        return f"a backend you have ({' or '.join(have)})"
    return "tensorflow after pip install tensorflow"


def use_backend(chosen: tuple[str, str] | None) -> None:
    """In a trial's worker, before Keras is imported: use the backend chosen for the run.

    Embedded Ray's workers share the driver's environment and home; a
    cluster's do not, and would fall back to their own choice (TensorFlow).

    Raises:
        BackendMissing: The backend is not installed on this node, or Keras is
            imported here already with another one.
    """
    if chosen is None:
        return
    name, where = chosen
    from orchestrator.errors import BackendMissing

    keras = sys.modules.get("keras")
    if keras is not None:
        if keras.backend.backend() != name:
            raise BackendMissing(
                f"the run's Keras backend is {name} ({where} where it started), and this "
                f"process has Keras on {keras.backend.backend()} already"
            )
        return
    module, package = BACKEND_PACKAGES.get(name, (name, name))
    if not _installed(module):
        import socket

        raise BackendMissing(
            f"the run's Keras backend is {name} ({where} where it started), and {module} "
            f"is not installed on {socket.gethostname()}: pip install {package} on every "
            f"node, or start the run with a backend they all have"
        )
    os.environ["KERAS_BACKEND"] = name


def configure_trial(cpus: float, gpus: float) -> None:
    """Set the backend's threads to the trial's CPU share, and GPU memory growth.

    Must run before the trial's first operation; in a reused worker the
    settings of its first trial stay, which is the same share.
    """
    # Never more than the machine has (keras_tuner's trials run in this process;
    # Ray would not place such a trial).
    threads = max(1, min(int(cpus), os.cpu_count() or int(cpus)))
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        quiet_tensorflow()
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


def quiet_tensorflow() -> None:
    """TensorFlow's Python logger to errors only: its warnings (retracing, say) are
    for whoever writes the model's layers, and printed over a run's progress view
    and through ``--quiet`` (Keras' grouped convolutions, as in ConvNeXt, warn of
    retracing whenever a model with five of them is traced). A run sets it in its
    driver and each trial's process; a library run puts the level back after it
    (:func:`orchestrator.tuning.ray_start.kept_process_state`). TensorFlow is not
    imported for it.
    """
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


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


__all__ = [
    "backend",
    "check_backend",
    "chosen_backend",
    "configure_trial",
    "gpu_count",
    "quiet_tensorflow",
    "share_gpu_memory",
    "use_backend",
]
