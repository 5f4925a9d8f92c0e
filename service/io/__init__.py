"""Bytes in, safely, for every kind of record: the size-checked :class:`Source` (bounded
gunzip, checked FITS view), the reader registry mechanism, the base input error, and the
manifest peek. Imports no web framework, no ONNX Runtime, no torch.
"""

from .errors import ERROR_CODES, InputError
from .registry import Reader, ReaderRegistry
from .source import Source

__all__ = ["ERROR_CODES", "InputError", "Reader", "ReaderRegistry", "Source"]
