"""Import an object from ``"package.module:attr"`` or ``"package.module.attr"``."""

from __future__ import annotations

import importlib
from typing import Any

from worker.exceptions import ImportPathError


def import_object(path: str) -> Any:
    """The object at ``path``; ``ImportPathError`` saying what failed otherwise.

    ``module:attr.sub`` walks attributes after the colon; without a colon the
    last dotted part is the attribute (the 1.x form ``myapp.routing.channel_routing``).
    """
    if not isinstance(path, str) or not path.strip():
        raise ImportPathError(f"an import path must be a non-empty str, got {path!r}")
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportPathError(
            f"import path {path!r} must look like 'package.module:attr' or 'package.module.attr'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"cannot import module {module_name!r} (from {path!r}): {exc}") \
            from exc
    except Exception as exc:  # the module itself is broken: say how
        raise ImportPathError(
            f"importing module {module_name!r} (from {path!r}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportPathError(
                f"module {module_name!r} has no attribute {attr!r} (from {path!r})"
            ) from None
    return target
