"""A small, typed Python client for the Specula service (issue 21, item 8).

```python
from service.client import SpeculaClient

with SpeculaClient("http://localhost:8000") as c:
    table = c.classify(["spec-1198-52669-0063.fits", my_specutils_spectrum])
```

``SpeculaClient`` blocks, ``AsyncSpeculaClient`` is awaited; both send over httpx, retry
429/503 as ``Retry-After`` asks (bounded by :class:`RetryPolicy`), and return astropy Tables
with units (classification) or dataclasses (saliency, lightcones). Layout: ``protocol``
(requests, retries, errors; no I/O), ``inputs`` (what is sent), ``results`` (what comes
back), ``core`` (the operations), ``clients`` (the two I/O loops). It imports neither FastAPI
nor ONNX Runtime: only httpx, numpy, astropy and the service's column definitions.
"""

from .clients import AsyncSpeculaClient, SpeculaClient
from .core import FileErrors
from .protocol import RetryPolicy, SpeculaError
from .results import LightconeResult, ParameterEstimate, SpectrumSaliency

__all__ = [
    "AsyncSpeculaClient", "FileErrors", "LightconeResult", "ParameterEstimate", "RetryPolicy",
    "SpectrumSaliency", "SpeculaClient", "SpeculaError",
]
