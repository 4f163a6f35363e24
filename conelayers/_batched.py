"""Row-wise sums for batches of items that share one sparsity pattern.

The items of a batch share A's pattern, D's and K's, so that a product or an
assembly over a pattern is, for all items at once, one ``np.bincount`` over
keys offset per row: as many NumPy calls for B items as for one (see
:func:`conelayers._refine.refine_many`).
"""

from __future__ import annotations

import numpy as np

from ._typing import FloatArray, IntArray

__all__ = ["segment_sums", "stack_rows"]


def segment_sums(weights: FloatArray, keys: IntArray, size: int) -> FloatArray:
    """Row k of the result is ``np.bincount(keys, weights=weights[k],
    minlength=size)``: all B rows (``weights`` is (B, len(keys))) in one call,
    with the same sums in the same order as row by row."""
    B = weights.shape[0]
    if B == 1:
        out = np.bincount(keys, weights=weights[0], minlength=size)[None]
    else:
        flat = (keys[None, :] + size * np.arange(B)[:, None]).ravel()
        out = np.bincount(flat, weights=weights.ravel(), minlength=B * size).reshape(B, size)
    return out.astype(np.float64, copy=False)  # (float already: weights are; for the stubs)


def stack_rows(objects: list, attribute: str) -> FloatArray:
    """``np.stack`` of one array attribute of each object (a view for one)."""
    if len(objects) == 1:
        return getattr(objects[0], attribute)[None]
    return np.stack([getattr(o, attribute) for o in objects])
