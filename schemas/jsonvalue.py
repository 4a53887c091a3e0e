"""What "JSON-serialisable" means for ``data.metadata``.

Objects with string keys, arrays, strings, finite numbers, booleans and null,
nested at most 32 deep. The stdlib encoder would silently turn ``1`` keys into
``"1"``, tuples into arrays and refuse NaN only when asked; this check makes
the rule explicit and names the offending path.
"""

from __future__ import annotations

import math
from typing import Final

MAX_DEPTH: Final = 32


def check_json(value: object, path: str = "data.metadata") -> str | None:
    """``None`` when ``value`` is plain JSON, else a message naming the first bad path."""
    return _check(value, path, 0)


def _check(value: object, path: str, depth: int) -> str | None:
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value!r} is not a JSON number"
    if depth >= MAX_DEPTH:
        return f"{path}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: key {key!r} is not a string"
            problem = _check(item, f"{path}.{key}", depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _check(item, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{path}: a {type(value).__name__} is not JSON-serialisable"
