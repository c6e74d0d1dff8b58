"""libdynconv from Python (ctypes + numpy): dynamic convolution and linear layers on numpy
arrays, and (dynconv.torch, when PyTorch is installed) as torch.nn.Modules.

    import dynconv
    layer = dynconv.Conv2d.from_safetensors("layer.safetensors")   # saved by dynconv-export
    y = layer.forward(x)          # x: [N, C_in, H, W], converted to float32
    pi = layer.attention          # [N, K]: the kernel mixture each sample got
    grads = layer.backward(x, gy) # {"input": ..., "weight": ..., "attention.fc1.weight": ...}
    net = dynconv.Network("net.safetensors")   # a whole network (dynconv.export.export_network)
    logits = net.forward(x)       # x: [N, C, H, W]

The package loads libdynconv.so.1 from the system's library path, or the file named by the
DYNCONV_LIBRARY environment variable, and checks its major version on import. When the library
cannot be loaded, `import dynconv` still succeeds (so that dynconv.export, which only needs
PyTorch, works), and the first use of the library raises ImportError with the reason.
"""

from ._version import __version__
from ._lib import DynconvError, library, version, version_number
from .layer import Conv2d, Linear, load_layer
from .network import Network, NodeInfo
from .safetensors import SafetensorsError, load_file

try:
    library()  # load and check the version now, so that a mismatch shows up early
except ImportError:
    pass  # raised again, with the reason, by the first call that needs the library

__all__ = ["__version__", "Conv2d", "Linear", "DynconvError", "Network", "NodeInfo",
           "SafetensorsError", "library", "load_file", "load_layer", "version", "version_number"]
