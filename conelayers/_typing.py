"""Shared type aliases. The core never names a torch or TensorFlow type."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.integer[Any]]
BoolArray: TypeAlias = NDArray[np.bool_]
CSC: TypeAlias = sp.csc_array
CSR: TypeAlias = sp.csr_array
SolverArgs: TypeAlias = dict[str, Any]

__all__ = ["CSC", "CSR", "ArrayLike", "BoolArray", "FloatArray", "IntArray", "SolverArgs"]
