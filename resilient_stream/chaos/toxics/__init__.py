"""One module per toxic type. Importing this package registers them all.

To add a fault, add a module here with one class decorated with
``@register_toxic``; nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
