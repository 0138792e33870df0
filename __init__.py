"""Not part of the package: a guard at the top of a diffrast source checkout.

Python started in the folder that holds the checkout (``git clone`` names it ``diffrast``) finds
the checkout's folder first on ``import diffrast``. Without this file it would import that folder
as an empty namespace package, and every name of the API would be missing
(``AttributeError: module 'diffrast' has no attribute 'RasterizeGLContext'``); with it, the
import stops with a message that says what to do. The package itself is the ``diffrast/`` folder
inside the checkout, installed with ``pip install .`` or ``pip install -e .`` (``.ci/setup``).
"""
import os

if __name__ == "diffrast":  # (pytest imports this file too, under the checkout's folder name)
    _checkout = os.path.dirname(os.path.abspath(__file__))
    raise ImportError(
        f"'import diffrast' found {_checkout}, the folder of a diffrast source checkout, because "
        f"Python was started in the folder that holds it ({os.path.dirname(_checkout)}) and "
        f"looks there first. Start Python in another folder (or inside the checkout, with an "
        f"editable install: pip install -e .) to import the installed package.")
