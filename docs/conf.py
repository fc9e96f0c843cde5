"""Sphinx configuration for the portproxy documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors). The
command-line reference is generated from ``portproxy.tap.Options`` by the extension in
``_ext/portproxy_options.py``, so the checkout's own ``portproxy`` is imported.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

from portproxy import __version__  # noqa: E402

project = "portproxy"
author = "the portproxy authors"
copyright = "the portproxy authors"
version = release = __version__

extensions = ["portproxy_options"]

root_doc = "index"
exclude_patterns = ["_build", "requirements.txt"]
# Every cross-reference (:option:, :envvar:, :doc:, :ref:) must resolve.
nitpicky = True
# No syntax highlighting guesses for plain literal blocks.
highlight_language = "none"

html_theme = "alabaster"
html_title = f"portproxy {release}"
html_theme_options = {
    "description": "Local web apps through one signed-in address",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
html_show_sourcelink = False
smartquotes = False
