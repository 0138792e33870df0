"""The package as a user meets it: its version, its type stub, the import from the folder that
holds a checkout, and a quiet exit."""
import ast
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys

import pytest

import diffrast as dr

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
STUB = os.path.join(ROOT, "diffrast", "__init__.pyi")


def _env():
    return dict(os.environ, PYOPENGL_PLATFORM="egl")


def test_version_is_the_installed_distributions():
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", dr.__version__)
    assert dr.__version__ == importlib.metadata.version("diffrast")


def test_checkout_folder_imports_as_the_package(tmp_path):
    # `git clone` names the checkout diffrast: Python started next to it finds that folder first
    # (so do pytest and multiprocessing's spawned children, which put that folder on sys.path);
    # the checkout's root __init__.py makes it the package, not an empty namespace package.
    os.symlink(ROOT, tmp_path / "diffrast")
    code = ("import torch, diffrast as dr\n"
            "pos = torch.tensor([[[-1., -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]])\n"
            "tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)\n"
            "rast, _ = dr.rasterize(dr.RasterizeGLContext(device='cpu'), pos, tri, (8, 8))\n"
            "print(dr.__version__, int((rast[..., 3] > 0).sum()), dr.gl_backend.__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [dr.__version__, "28", "diffrast.gl_backend"], run.stdout


def test_import_from_inside_the_checkout_and_elsewhere_finds_the_package(tmp_path):
    code = "import diffrast; print(diffrast.rasterize.__module__)"
    for cwd in (ROOT, tmp_path):
        run = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "diffrast.rasterize", run.stderr


def test_creating_a_context_and_exiting_prints_nothing():
    # A context freed at interpreter shutdown used to make PyOpenGL print its handler table.
    code = "import diffrast as dr\nctx = dr.RasterizeGLContext(device='cpu')\n"
    run = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0
    assert run.stdout == "" and run.stderr == "", run.stdout + run.stderr


def test_ci_setup_run_again_installs_and_prints_nothing():
    venv = os.path.join(ROOT, ".ci", "venv")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        pytest.skip("checks .ci/setup only from the environment it made (.ci/venv)")
    freeze = [sys.executable, "-m", "pip", "freeze", "--all"]
    before = subprocess.run(freeze, capture_output=True, text=True, check=True).stdout
    run = subprocess.run(["bash", os.path.join(ROOT, ".ci", "setup")], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr
    assert subprocess.run(freeze, capture_output=True, text=True, check=True).stdout == before


# -- the type stub -----------------------------------------------------------------------------

def _stub():
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read())


def _stub_params(fn: ast.FunctionDef):
    """``[(name, kind, default)]`` of a stub function, ``default`` as a Python value (or
    ``inspect.Parameter.empty``)."""
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(pos) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults]
    out = [(p.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for p, d in zip(pos, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, inspect.Parameter.KEYWORD_ONLY,
                    inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty))
    return out


def _runtime_params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _checked_definitions():
    """``(qualified name, stub function, runtime function)`` for every def in the stub."""
    for node in _stub().body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node, getattr(dr, node.name)
        elif isinstance(node, ast.ClassDef):
            cls = getattr(dr, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    attr = inspect.getattr_static(cls, item.name)
                    if isinstance(attr, property):
                        assert any(isinstance(d, ast.Name) and d.id == "property"
                                   for d in item.decorator_list), f"{node.name}.{item.name}"
                        continue
                    yield f"{node.name}.{item.name}", item, attr


def test_stub_declares_every_public_name_and_nothing_else():
    public = {n.name for n in _stub().body
              if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
    assert public | {"triangle_id"} == set(dr.__all__)
    stub_all = next(n for n in _stub().body if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", None) == "__all__")
    assert ast.literal_eval(stub_all.value) == dr.__all__


@pytest.mark.parametrize("name, stub_fn, runtime_fn", list(_checked_definitions()),
                         ids=[name for name, _, _ in _checked_definitions()])
def test_stub_signature_matches_the_code(name, stub_fn, runtime_fn):
    assert _stub_params(stub_fn) == _runtime_params(runtime_fn), name


def test_stub_type_checks_a_program_and_catches_a_wrong_call(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "good.py").write_text(
        "import torch\nimport diffrast as dr\n\n"
        "glctx = dr.RasterizeGLContext(device='cpu')\n"
        "pos, tri = torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.int32)\n"
        "rast, db = dr.rasterize(glctx, pos, tri, (8, 8))\n"
        "uv, uv_da = dr.interpolate(pos[0, :, :2], rast, tri, rast_db=db, diff_attrs='all')\n"
        "mip = dr.texture_construct_mip(torch.zeros(1, 8, 8, 3))\n"
        "img: torch.Tensor = dr.texture(torch.zeros(1, 8, 8, 3), uv, uv_da, mip=mip)\n"
        "img = dr.antialias(img, rast, pos, tri, dr.antialias_construct_topology_hash(tri))\n"
        "version: str = dr.__version__\n")
    (tmp_path / "bad.py").write_text(
        "import diffrast as dr\n\n"
        "dr.rasterize(dr.RasterizeGLContext(), None, None, resolution=256.5)\n")
    # The checkout's diffrast/ (with the stub) on mypy's path: an editable install is invisible
    # to static tools.
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"),
                          str(tmp_path / "good.py"), str(tmp_path / "bad.py")],
                         env=dict(os.environ, MYPYPATH=ROOT), capture_output=True, text=True,
                         timeout=300)
    out, status = run.stdout + run.stderr, run.returncode
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and errors, out
    assert all("bad.py:3:" in line for line in errors), out
    assert any('"Sequence[int]"' in line for line in errors), out
