"""Sphinx configuration of diffrast's API reference (built in CI with warnings as errors:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``)."""
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import diffrast  # noqa: E402

project = "diffrast"
copyright = "diffrast authors; BSD-3-Clause"
version = release = diffrast.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"       # the docstrings give the shapes and dtypes
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
html_static_path = []
