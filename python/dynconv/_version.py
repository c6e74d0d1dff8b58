"""The package's version: always the C library's (include/dynconv/dynconv.h), which CMake
checks at configure time; kept as a plain literal so that setuptools reads it without importing
the package (which loads the library)."""

__version__ = "1.2.0"
