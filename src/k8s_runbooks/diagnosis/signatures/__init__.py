"""Failure signatures, one module per layer. Each signature takes the shared `Context` and returns the
hypotheses its evidence supports (possibly none); the engine merges and ranks them."""

from __future__ import annotations

from collections.abc import Callable

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.hypothesis import Hypothesis
from k8s_runbooks.diagnosis.signatures import (
    admission,
    dependencies,
    infrastructure,
    performance,
    routing,
    runtime,
    scheduling,
    startup,
)

Signature = Callable[[Context], list[Hypothesis]]

ALL: tuple[Signature, ...] = (
    *admission.SIGNATURES,
    *scheduling.SIGNATURES,
    *startup.SIGNATURES,
    *runtime.SIGNATURES,
    *dependencies.SIGNATURES,
    *routing.SIGNATURES,
    *performance.SIGNATURES,
    *infrastructure.SIGNATURES,
)
