"""The code's layout rules: no private name crosses a module boundary; benchmarks edit no
``sys.path``.

A name with a leading underscore belongs to its module. Shared helpers are public names of the
module that owns them (with a docstring), so a reader can find who uses what.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("diffrast", "gl_backend", "cuda_ops")


def _modules():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(folder, name), ROOT)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported_modules(tree):
    """Names bound to modules of this project by ``import`` / ``from . import`` statements."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0]
                                                 in PACKAGES + ("diffrast",)):
            for alias in node.names:
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    bound.add(alias.asname or alias.name.split(".")[0])
    return bound


@pytest.mark.parametrize("path", sorted(_modules()))
def test_no_private_name_is_imported_or_used_across_modules(path):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            ours = node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
            if ours:
                found += [f"from {node.module} import {a.name}" for a in node.names
                          if _private(a.name)]
                if node.module and any(_private(part) for part in node.module.split(".")):
                    found.append(f"from {node.module} import ...")
    modules = _imported_modules(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    assert not found, f"{path} reaches into other modules' private names: {found}"


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(ROOT, "benchmarks"))
                                        if n.endswith(".py")))
def test_benchmarks_do_not_edit_sys_path(name):
    """Benchmarks import the package as installed, each other from their own folder (the
    script's folder is on ``sys.path`` already) and the tests' helpers as the package
    ``tests.helpers`` (run as modules from the repository root)."""
    with open(os.path.join(ROOT, "benchmarks", name)) as f:
        assert "sys.path" not in f.read()
