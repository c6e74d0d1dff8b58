"""Loading libdynconv with ctypes and declaring the C functions the package calls."""

import ctypes
import os

# The C API major version this package is written against (DYNCONV_VERSION_MAJOR).
API_MAJOR = 1
LIBRARY_ENV = "DYNCONV_LIBRARY"

_int64 = ctypes.c_int64
_float_p = ctypes.POINTER(ctypes.c_float)


class Geometry(ctypes.Structure):
    _fields_ = [(name, _int64) for name in (
        "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w",
        "pad_h", "pad_w", "dilation_h", "dilation_w", "groups", "num_kernels", "hidden")]


class Weights(ctypes.Structure):
    _fields_ = [(name, _float_p) for name in (
        "weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")]


class Gradients(ctypes.Structure):
    _fields_ = [(name, _float_p) for name in (
        "input", "weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")]


class LinearGeometry(ctypes.Structure):
    _fields_ = [(name, _int64) for name in (
        "in_features", "out_features", "num_kernels", "hidden")]


class DynconvError(RuntimeError):
    """A libdynconv call failed: .status is the dynconv_status number, .message the library's
    explanation."""

    def __init__(self, function, status, status_string, message):
        # The library's message already starts with the function's name: say it once.
        if message.startswith(function + ":"):
            message = message[len(function) + 1:].lstrip()
        super().__init__(f"{function}: {status_string}: {message}")
        self.function = function
        self.status = status
        self.status_string = status_string
        self.message = message


class NodeInfo(ctypes.Structure):
    """dynconv_network_node_info."""
    _fields_ = [("name", ctypes.c_char_p), ("op", ctypes.c_char_p), ("module", ctypes.c_char_p),
                ("num_kernels", _int64), ("fused", ctypes.c_uint32), ("rank", ctypes.c_int),
                ("shape", _int64 * 4), ("parameters", _int64)]


_library = None
_network_declared = False


def _declare(lib):
    c_status = ctypes.c_int
    handle = ctypes.c_void_p
    sigs = {
        "dynconv_version_number": (ctypes.c_uint, []),
        "dynconv_version_string": (ctypes.c_char_p, []),
        "dynconv_status_string": (ctypes.c_char_p, [c_status]),
        "dynconv_last_error_message": (ctypes.c_char_p, []),
        "dynconv_conv2d_create": (c_status, [ctypes.POINTER(Geometry), ctypes.POINTER(Weights),
                                             ctypes.c_float, ctypes.c_uint32,
                                             ctypes.POINTER(handle)]),
        "dynconv_conv2d_destroy": (None, [handle]),
        "dynconv_conv2d_set_temperature": (c_status, [handle, ctypes.c_float]),
        "dynconv_conv2d_get_temperature": (c_status, [handle, _float_p]),
        "dynconv_conv2d_reshape": (c_status, [handle, _int64, _int64, _int64,
                                              ctypes.POINTER(_int64), ctypes.POINTER(_int64),
                                              ctypes.POINTER(ctypes.c_size_t)]),
        "dynconv_conv2d_forward": (c_status, [handle, _float_p, _float_p, _float_p,
                                              ctypes.c_void_p, ctypes.c_size_t]),
        "dynconv_conv2d_prepare_backward": (c_status, [handle, ctypes.POINTER(ctypes.c_size_t)]),
        "dynconv_conv2d_backward": (c_status, [handle, _float_p, _float_p,
                                               ctypes.POINTER(Gradients), ctypes.c_uint32,
                                               ctypes.c_void_p, ctypes.c_size_t]),
        "dynconv_conv2d_set_num_threads": (c_status, [handle, ctypes.c_int]),
        "dynconv_conv2d_get_num_threads": (c_status, [handle, ctypes.POINTER(ctypes.c_int)]),
        "dynconv_conv2d_set_temperature_schedule": (c_status, [handle, ctypes.c_float,
                                                               ctypes.c_float, _int64]),
        "dynconv_conv2d_step_temperature": (c_status, [handle, _float_p]),
        "dynconv_linear_create": (c_status, [ctypes.POINTER(LinearGeometry),
                                             ctypes.POINTER(Weights), ctypes.c_float,
                                             ctypes.c_uint32, ctypes.POINTER(handle)]),
        "dynconv_linear_destroy": (None, [handle]),
        "dynconv_linear_set_temperature": (c_status, [handle, ctypes.c_float]),
        "dynconv_linear_get_temperature": (c_status, [handle, _float_p]),
        "dynconv_linear_set_temperature_schedule": (c_status, [handle, ctypes.c_float,
                                                               ctypes.c_float, _int64]),
        "dynconv_linear_step_temperature": (c_status, [handle, _float_p]),
        "dynconv_linear_reshape": (c_status, [handle, _int64, ctypes.POINTER(ctypes.c_size_t)]),
        "dynconv_linear_forward": (c_status, [handle, _float_p, _float_p, _float_p,
                                              ctypes.c_void_p, ctypes.c_size_t]),
        "dynconv_linear_prepare_backward": (c_status, [handle, ctypes.POINTER(ctypes.c_size_t)]),
        "dynconv_linear_backward": (c_status, [handle, _float_p, _float_p,
                                               ctypes.POINTER(Gradients), ctypes.c_uint32,
                                               ctypes.c_void_p, ctypes.c_size_t]),
        "dynconv_linear_set_num_threads": (c_status, [handle, ctypes.c_int]),
        "dynconv_linear_get_num_threads": (c_status, [handle, ctypes.POINTER(ctypes.c_int)]),
        "dynconv_blas_config": (ctypes.c_char_p, []),
        "dynconv_blas_core": (ctypes.c_char_p, []),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _declare_network(lib):
    """The network API (libdynconv 1.2, symbol version DYNCONV_1.2)."""
    c_status = ctypes.c_int
    handle = ctypes.c_void_p
    p_handle = ctypes.POINTER(handle)
    p_int64 = ctypes.POINTER(_int64)
    sigs = {
        "dynconv_network_create_from_file": (c_status, [ctypes.c_char_p, ctypes.c_uint32,
                                                        p_handle]),
        "dynconv_network_create_from_memory": (c_status, [ctypes.c_void_p, ctypes.c_size_t,
                                                          ctypes.c_uint32, p_handle]),
        "dynconv_network_destroy": (None, [handle]),
        "dynconv_network_get_input_channels": (c_status, [handle, p_int64]),
        "dynconv_network_get_num_outputs": (c_status, [handle, p_int64]),
        "dynconv_network_reshape": (c_status, [handle, _int64, _int64, _int64,
                                               ctypes.POINTER(ctypes.c_size_t)]),
        "dynconv_network_get_output_shape": (c_status, [handle, _int64, p_int64,
                                                        ctypes.POINTER(ctypes.c_int)]),
        "dynconv_network_forward": (c_status, [handle, _float_p, ctypes.POINTER(_float_p)]),
        "dynconv_network_get_num_nodes": (c_status, [handle, p_int64]),
        "dynconv_network_get_node_info": (c_status, [handle, _int64,
                                                     ctypes.POINTER(NodeInfo)]),
        "dynconv_network_set_temperature": (c_status, [handle, ctypes.c_char_p,
                                                       ctypes.c_float]),
        "dynconv_network_get_temperature": (c_status, [handle, ctypes.c_char_p, _float_p]),
        "dynconv_network_get_attention": (c_status, [handle, ctypes.c_char_p, _float_p,
                                                     _int64]),
        "dynconv_network_set_num_threads": (c_status, [handle, ctypes.c_int]),
        "dynconv_network_get_num_threads": (c_status, [handle, ctypes.POINTER(ctypes.c_int)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def network_library():
    """The loaded libdynconv with its network functions declared. The layers work with any
    1.x library; networks need 1.2, and an older library raises ImportError here (not when
    the package is imported)."""
    global _network_declared
    lib = library()
    if not _network_declared:
        try:
            _declare_network(lib)
        except AttributeError as e:
            raise ImportError(f"libdynconv {lib.dynconv_version_string().decode()} has no "
                              f"network API (added in 1.2): {e}") from e
        _network_declared = True
    return lib


def library():
    """The loaded libdynconv (loaded and version-checked on first use): the file named by the
    DYNCONV_LIBRARY environment variable, else libdynconv.so.1 from the system's search path."""
    global _library
    if _library is not None:
        return _library
    path = os.environ.get(LIBRARY_ENV) or "libdynconv.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"cannot load libdynconv from '{path}' ({e}); install the library or "
                          f"set {LIBRARY_ENV} to the path of libdynconv.so.1") from e
    try:
        _declare(lib)
    except AttributeError as e:
        raise ImportError(f"'{path}' is not a compatible libdynconv: {e}") from e
    number = lib.dynconv_version_number()
    if number // 10000 != API_MAJOR:
        raise ImportError(f"'{path}' is libdynconv {lib.dynconv_version_string().decode()}; "
                          f"this package needs major version {API_MAJOR}")
    _library = lib
    return lib


def check(function, status):
    """Raises DynconvError for a non-zero status."""
    if status != 0:
        lib = library()
        raise DynconvError(function, status, lib.dynconv_status_string(status).decode(),
                           lib.dynconv_last_error_message().decode(errors="replace"))


def version():
    """The loaded library's version string, e.g. "1.0.0"."""
    return library().dynconv_version_string().decode()


def version_number():
    return int(library().dynconv_version_number())


class Handle:
    """What the objects owning one library handle share: its lifetime (close() frees it once,
    through _destroy, also as a context manager and when collected) and its thread count. The
    subclass names _destroy, _live() (the handle, or an error once closed) and _call(name, ...)
    (calls its prefix's function `name` and raises DynconvError on failure)."""

    _handle = None

    def _destroy(self, handle):
        raise NotImplementedError

    @property
    def threads(self):
        """Threads a forward uses; assign 0 for one per CPU available (the default)."""
        t = ctypes.c_int()
        self._call("get_num_threads", self._live(), ctypes.byref(t))
        return t.value

    @threads.setter
    def threads(self, value):
        self._call("set_num_threads", self._live(), int(value))

    def close(self):
        """Frees the library's handle (also done when the object is collected)."""
        if self._handle is not None:
            self._destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
