"""Whether the sandbox annex is installed here: a checkout has it (the `sandbox` extra), the product image does not."""

from __future__ import annotations

import importlib.util

NO_SANDBOX = ("the sandbox is not part of this installation (the product image leaves it out); it comes with a "
              "checkout: pip install -e '.[sandbox]' (or make venv)")


def sandbox_installed() -> bool:
    return importlib.util.find_spec("k8s_runbooks.sandbox") is not None
