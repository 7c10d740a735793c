"""Choices that dependencies read when first imported, made before they are.

Each leaves out something the daemon never uses and would otherwise keep resident.
"""

from __future__ import annotations

import os
import sys


def prepare_imports() -> None:
    """Call before httpx or aiohttp is first imported; calling again changes nothing.

    - `import httpx` also tries `httpx._main`, which imports click and pygments whenever
      they happen to be installed (a development environment has them): about 1.5 MiB. A
      None entry in `sys.modules` makes that one import fail at once, which httpx handles
      by going without its command-line client.
    - frozenlist's C++ build loads libstdc++, about 1 MiB resident, for the few lists
      aiohttp (under aiobotocore, for the ECS source) freezes at start-up; its pure-Python
      build serves those as well. An operator's own setting wins.
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
