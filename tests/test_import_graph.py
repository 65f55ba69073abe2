"""scripts/import_graph.py on a package written here (its circles, lazy imports and upward imports known by
construction), and the package's own graph: no circle, no import back up a layer, every function-local import
with its reason."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
import_graph = sys.modules["import_graph"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(import_graph)

FILES = {
    "__init__.py": "",
    "a.py": "from pkg import b\nimport json\n",
    "b.py": "def f():\n    from pkg import a  # lazy: circle\n    import numpy\n",
    "d.py": "from pkg.sub import e\n",
    "sub/__init__.py": "",
    "sub/c.py": "from pkg import d\n",
    "sub/e.py": "from ..b import f\n\n\ndef g():\n    from . import c\n",
}


def write_package(root: Path) -> Path:
    for name, text in FILES.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_package_written_here(tmp_path):
    graph = import_graph.analyse(write_package(tmp_path))
    assert sorted(graph.modules) == ["pkg", "pkg.a", "pkg.b", "pkg.d", "pkg.sub", "pkg.sub.c", "pkg.sub.e"]
    edges = {(i.source, i.target, i.local) for i in graph.internal}
    assert edges == {("pkg.a", "pkg.b", False), ("pkg.b", "pkg.a", True), ("pkg.d", "pkg.sub.e", False),
                     ("pkg.sub.c", "pkg.d", False), ("pkg.sub.e", "pkg.b", False),
                     ("pkg.sub.e", "pkg.sub.c", True)}
    # a <-> b through b's function-local import; c -> d -> e -> c through e's
    assert graph.circles == [["pkg.a", "pkg.b"], ["pkg.d", "pkg.sub.c", "pkg.sub.e"]]
    lazy = {(i.source, i.target, i.reason) for i in graph.imports if i.local}
    assert lazy == {("pkg.b", "pkg.a", "circle"), ("pkg.b", "numpy", None), ("pkg.sub.e", "pkg.sub.c", None)}
    # sub.c imports d, outside its subpackage, and d imports sub.e
    assert [(i.source, i.target) for i in graph.back_up] == [("pkg.sub.c", "pkg.d")]


def test_normexp_has_no_import_circle_no_import_back_up_and_every_lazy_import_says_why():
    graph = import_graph.analyse(REPO / "normexp")
    assert graph.circles == []
    assert [f"{i.source}:{i.line} -> {i.target}" for i in graph.back_up] == []
    unexplained = [f"{i.source}:{i.line} -> {i.target}" for i in graph.imports if i.local and not i.reason]
    assert unexplained == []  # the package's own modules and third-party ones alike
