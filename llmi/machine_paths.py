"""Error texts without the paths of this machine, for what travels with a document.

A failed slot's error (a chart's traceback, a tool's exception) is written into the
manifest and the document, which people share. A path such as
``/home/ana/.venv/lib/python3.11/site-packages/matplotlib/axes/_axes.py`` tells their
reader nothing that ``matplotlib/axes/_axes.py`` does not, and tells them the user's name
and folders besides.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

# One part of a path as it stands in an error text: quotes, brackets, commas and colons
# end it, as they do in tracebacks ('File "/x/y.py", line 3') and OSError messages.
_PART = r"""[^\s/'"`<>|,;:()\[\]{}]+"""
# Not after a word, a dot, a tilde, a colon or a slash: a URL's path, a relative path, a ratio.
_ABSOLUTE = re.compile(rf"(?<![\w.~:/-])/(?:{_PART}/)+({_PART})")


def without_machine_paths(text: str) -> str:
    """``text`` with every absolute path of this machine taken out.

    A file under an import root (site-packages, the standard library, llmi's own package
    folders) is named from it, as an import names it: ``matplotlib/axes/_axes.py``,
    ``llmi/tools/code.py``. Any other absolute path (the home folder, temporary folders,
    the cache, the venv's) keeps only its last part: ``…/photo.png``. A chart's own frames
    (``File "<chart>", line 3``) hold no path and stay as they are.
    """
    roots = dict(_import_roots())
    if roots:
        # Longest first, so a package folder wins over the folder it lies in.
        pattern = "|".join(re.escape(root) for root in sorted(roots, key=len, reverse=True))
        text = re.sub(rf"(?<![\w.~:/-])(?:{pattern})", lambda m: roots[m.group(0)], text)
    return _ABSOLUTE.sub(lambda m: f"…/{m.group(1)}", text)


def _import_roots() -> Iterator[tuple[str, str]]:
    """(folder with a trailing separator, what a file in it is named from) pairs."""
    for entry in sys.path:
        if os.path.isabs(entry) and os.path.isdir(entry):
            yield os.path.join(entry, ""), ""
            yield os.path.join(os.path.realpath(entry), ""), ""
    # llmi's subpackages live in folders of their own (``nodes/`` is ``llmi/nodes``).
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "llmi":
            for folder in getattr(module, "__path__", None) or ():
                yield os.path.join(folder, ""), name.replace(".", "/") + "/"
