"""Shared fixtures: Hypothesis profiles and the kernel parametrization.

The (format, op, isa) list comes from generated/MANIFEST.json, the same
registry the build and the benchmarks read. A kernel whose ISA this CPU or
build lacks is skipped with the reason, never run on another ISA.
"""

from __future__ import annotations

import json
import os
from importlib import resources

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nightly", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def manifest_kernels() -> list[dict]:
    text = resources.files("quantspec.generated").joinpath("MANIFEST.json").read_text()
    return json.loads(text)["kernels"]


def kernel_params(op: str):
    """pytest params ``(fmt, isa)`` with ids ``<fmt>-<isa>`` for every kernel of ``op``."""
    from quantspec import dispatch

    params = []
    for k in manifest_kernels():
        if k["op"] != op:
            continue
        marks = []
        if k["isa"] not in dispatch.cpu_features():
            marks.append(pytest.mark.skip(reason=f"this CPU lacks {k['isa']}"))
        elif not dispatch.has_kernel(k["isa"], k["format"], op):
            marks.append(pytest.mark.skip(reason=f"the {k['isa']} extension is not built"))
        params.append(pytest.param(k["format"], k["isa"], id=f"{k['format']}-{k['isa']}", marks=marks))
    return params
