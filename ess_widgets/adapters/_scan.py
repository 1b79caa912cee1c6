"""Record the arguments of a module-level scan function during a forward pass.

transformers' Mamba mixers call module-level functions (``mamba_selective_scan``,
``mamba2_chunk_scan``) that are looked up at call time, so replacing the module
attribute for the length of a forward pass sees exactly what the scan receives,
whichever implementation (PyTorch reference or CUDA kernel) sits behind the
name. A forward pre-hook on each mixer tells the wrapper which layer is running.
"""

from __future__ import annotations

import contextlib
import sys
import threading

from .architectures import MixerLayer

__all__ = ["recording_scan"]

# Patching a module attribute is process-wide: one recording at a time.
_LOCK = threading.RLock()


@contextlib.contextmanager
def recording_scan(layers: list[MixerLayer], function: str, names: tuple[str, ...], on_call):
    """Wrap ``function`` in the mixers' modules; call ``on_call(layer, arguments)``.

    Parameters
    ----------
    layers : list of MixerLayer
        The layers to record; calls from other layers pass through untouched.
    function : str
        Name of the module-level scan function in the mixers' modules.
    names : tuple of str
        Names of the scan's positional parameters, to turn a call into a dict.
    on_call : callable
        ``on_call(layer, arguments)`` with ``arguments`` a dict name -> value.
    """
    wanted = {id(layer.module): layer for layer in layers}
    current: list[MixerLayer | None] = [None]
    modules = {sys.modules[type(layer.module).__module__] for layer in layers}
    for module in modules:
        if not callable(getattr(module, function, None)):
            raise RuntimeError(
                f"{module.__name__} has no function `{function}`: this transformers "
                "version computes the scan differently. ess_widgets reads "
                f"{type(layers[0].module).__name__} layers through that function "
                "(transformers >= 5)."
            )

    def before(module, args):
        current[0] = wanted.get(id(module))

    def after(module, args, output):
        current[0] = None

    with _LOCK:
        originals = {module: getattr(module, function) for module in modules}

        def wrap(original):
            def scan(*args, **kwargs):
                layer = current[0]
                if layer is not None:
                    arguments = dict(zip(names, args))
                    arguments.update(kwargs)
                    on_call(layer, arguments)
                return original(*args, **kwargs)

            return scan

        handles = []
        try:
            for module, original in originals.items():
                setattr(module, function, wrap(original))
            for layer in layers:
                handles.append(layer.module.register_forward_pre_hook(before))
                handles.append(layer.module.register_forward_hook(after))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for module, original in originals.items():
                setattr(module, function, original)
