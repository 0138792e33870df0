"""Not part of the package: makes a diffrast source checkout importable as the package itself.

Python started in the folder that holds the checkout (``git clone`` names it ``diffrast``), or a
process whose ``sys.path`` has that folder (pytest puts it there when it collects this file,
and ``multiprocessing``'s spawned children inherit it), finds the checkout's folder first on
``import diffrast``. Without this file that would be an empty namespace package with none of
the API (``AttributeError: module 'diffrast' has no attribute 'RasterizeGLContext'``). Imported
as ``diffrast``, this file turns into the package of the checkout: its search path is the
package folder ``diffrast/`` and the checkout (where ``gl_backend``, ``cuda_ops`` and
``shaders`` live, installed as ``diffrast.gl_backend`` and so on), and it runs the package's own
``diffrast/__init__.py``. Under any other name (pytest's, from another folder name) it does
nothing.
"""
import os

if __name__ == "diffrast":
    _checkout = os.path.dirname(os.path.abspath(__file__))
    __path__ = [os.path.join(_checkout, "diffrast"), _checkout]
    __file__ = os.path.join(_checkout, "diffrast", "__init__.py")
    with open(__file__, encoding="utf-8") as _f:
        exec(compile(_f.read(), __file__, "exec"))
    del _f, _checkout
