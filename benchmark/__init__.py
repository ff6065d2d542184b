"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018) and the tests that followed, as a suite.

    import benchmark
    result = benchmark.sanity_check(model, images, test="cascading", methods=["gradient", my_fn])

``sanity_check`` is lazy-imported so that ``import benchmark`` stays light for the command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sanity_check", "Result", "TESTS"]


def __getattr__(name: str) -> Any:
    if name == "sanity_check":
        from benchmark.api import sanity_check

        return sanity_check
    if name == "Result":
        from benchmark.core import Result

        return Result
    if name == "TESTS":
        from benchmark.checks import TESTS

        return TESTS
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
