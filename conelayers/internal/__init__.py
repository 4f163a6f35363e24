"""Unstable helpers for power users. No compatibility promise.

The canonicalized program (``layer.program``) exposes C and R as sparse
matrices; these are the pieces that build and differentiate it.
"""

from .._canonicalize import canonicalize as canonicalize
from .._cones import svec as svec
from .._cones import unsvec as unsvec
from .._diff import ItemDerivative as ItemDerivative
from .._dproj import dproject_dual as dproject_dual
from .._solvers import get_solver as get_solver
