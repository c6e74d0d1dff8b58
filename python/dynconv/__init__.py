"""libdynconv from Python (ctypes + numpy): dynamic convolution layers on numpy arrays.

    import dynconv
    layer = dynconv.Conv2d.from_safetensors("layer.safetensors")   # saved by export_dynconv.py
    y = layer.forward(x)          # x: [N, C_in, H, W] float32
    pi = layer.attention          # [N, K]: the kernel mixture each sample got

The package loads libdynconv.so.1 from the system's library path, or the file named by the
DYNCONV_LIBRARY environment variable, and checks its major version on import.
"""

from ._version import __version__
from ._lib import DynconvError, library, version, version_number
from .layer import Conv2d
from .safetensors import SafetensorsError, load_file

library()  # fail at import, with the reason, rather than at first use

__all__ = ["__version__", "Conv2d", "DynconvError", "SafetensorsError", "library", "load_file", "version",
           "version_number"]
