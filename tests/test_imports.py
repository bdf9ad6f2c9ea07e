"""No module of zyn/ or experiments/ imports another module's private (_underscored) name.

A private name is free to change with its own module; importing it elsewhere ties two modules
together where no reader of the first one would look. Make the name public or move the code.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zyn", "experiments")


def private_imports(source: str) -> list[str]:
    """``line: from X import _name`` for each private name imported (dunders such as __version__ are public)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [f"{node.lineno}: from {module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_private_imports_finds_them():
    # relative and absolute, inside a function too; dunders and public names pass
    source = ("from .report import _mean, table\nfrom __future__ import annotations\n"
              "def f():\n    from zyn.model import _token_ids\nfrom zyn import __version__\n")
    assert private_imports(source) == ["1: from .report import _mean", "4: from zyn.model import _token_ids"]


def test_no_private_imports_across_modules():
    offenders = [f"{path.relative_to(ROOT)}:{hit}"
                 for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 for hit in private_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, "private names imported from other modules:\n" + "\n".join(offenders)


def test_every_package_of_zyn_is_installed_by_setup_cfg():
    """A package missing from setup.cfg's `packages` is missing from the built wheel."""
    import configparser

    root = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "zyn").rglob("__init__.py")}
    assert found - listed == set()
