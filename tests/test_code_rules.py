"""Code rules of the package, checked on its source with :mod:`ast` (no import of the modules).

- No module of ``spatialfair/`` uses another module's private name: neither
  ``from X import _name`` (relative or absolute, ``X`` another module of the package) nor
  ``module._name`` on a name bound to a module of the package. ``__dunder__`` names are fine.
  A private name is the module's own business; one that another module needs is public (with
  a docstring), or the two belong in one module.
- No module is over :data:`MAX_MODULE_LINES` lines, no class over :data:`MAX_CLASS_LINES`.
- Every package (``__init__.py``) has a module docstring that says what lives where.

Every failure names the file, the line and the rule.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spatialfair"
MAX_MODULE_LINES = 900
MAX_CLASS_LINES = 250

#: Nodes that open a scope of their own (names bound inside are not bound outside).
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def is_private(name: str) -> bool:
    """``_name`` is private; ``__dunder__`` is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` = package)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _where(path: Path, line: int, package_dir: Path) -> str:
    return f"{path.relative_to(package_dir.parent).as_posix()}:{line}"


def _imported_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of ``X`` in ``from X import ...`` written in ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of one scope: its body, not the inside of a nested scope; a nested scope's
    node itself (the scope binds its name) and what it evaluates outside (decorators,
    defaults, base classes) are the scope's."""
    body = scope.body if isinstance(scope, (ast.Module, *SCOPES)) else []
    todo = list(body) if isinstance(body, list) else [body]  # a lambda's body is one node
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(getattr(node, "decorator_list", []))
            todo.extend(d for d in [*node.args.defaults, *node.args.kw_defaults] if d)
        elif isinstance(node, ast.ClassDef):
            todo.extend([*node.decorator_list, *node.bases, *node.keywords])
        else:
            todo.extend(ast.iter_child_nodes(node))


def _bindings(scope: ast.AST, where: tuple[str, bool], modules: dict) -> dict[str, str | None]:
    """Names one scope binds -> the package module bound (None: anything else). A name that
    the scope binds to a package module anywhere counts as that module."""
    module, is_package = where
    found: dict[str, str | None] = {}

    def bind(name: str, value: str | None = None) -> None:
        if value is not None or name not in found:
            found[name] = value

    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                bind(arg.arg)
    for node in _own_nodes(scope):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name if alias.asname else alias.name.split(".")[0]
                bind(alias.asname or name, name if name in modules else None)
        elif isinstance(node, ast.ImportFrom):
            base = _imported_module(node, module, is_package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                bind(alias.asname or alias.name, full if full in modules else None)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bind(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name)
    return found


def _module_of(node: ast.expr, chain: list[dict], modules: dict) -> str | None:
    """The package module an expression like ``config`` or ``spatialfair.fairness.base``
    names in a scope chain (innermost first), or None."""
    if isinstance(node, ast.Name):
        for bound in chain:
            if node.id in bound:
                return bound[node.id]
        return None
    if isinstance(node, ast.Attribute):
        parent = _module_of(node.value, chain, modules)
        full = f"{parent}.{node.attr}" if parent else None
        return full if full in modules else None
    return None


def _private_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple]:
    """(line, text) of every ``from X import _name`` with X another module of the package."""
    top = module.split(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _imported_module(node, module, is_package)
        if source != module and (source == top or source.startswith(top + ".")):
            for alias in node.names:
                if is_private(alias.name):
                    yield node.lineno, f"from {source} import {alias.name}"


def _private_attributes(tree: ast.Module, where: tuple[str, bool], modules: dict) -> Iterator:
    """(line, text) of every ``module._name`` on a name bound to another package module."""

    def visit(scope: ast.AST, outer: list[dict]) -> Iterator[tuple]:
        here = [_bindings(scope, where, modules), *outer]
        for node in _own_nodes(scope):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                owner = _module_of(node.value, here, modules)
                if owner and owner != where[0]:
                    yield node.lineno, f"{owner}.{node.attr}"
            if isinstance(node, SCOPES):  # a class body's names are not seen in its methods
                yield from visit(node, outer if isinstance(scope, ast.ClassDef) else here)

    yield from visit(tree, [])


def private_name_uses(package_dir: Path) -> list[str]:
    """Every use of another module's private name in the package, with file, line and rule."""
    modules = package_modules(package_dir)
    problems = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = (module, path.name == "__init__.py")
        found = [*_private_imports(tree, *where), *_private_attributes(tree, where, modules)]
        for line, text in sorted(set(found)):
            problems.append(
                f"{_where(path, line, package_dir)}: `{text}` uses another module's private "
                "name (rule: no private names across modules; make it public or move the code)"
            )
    return problems


def size_problems(package_dir: Path) -> list[str]:
    """Modules over :data:`MAX_MODULE_LINES` and classes over :data:`MAX_CLASS_LINES` lines."""
    problems = []
    for path in package_modules(package_dir).values():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            problems.append(
                f"{_where(path, 1, package_dir)}: module has {n} lines "
                f"(rule: at most {MAX_MODULE_LINES} lines per module)"
            )
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    problems.append(
                        f"{_where(path, node.lineno, package_dir)}: class {node.name} has "
                        f"{size} lines (rule: at most {MAX_CLASS_LINES} lines per class)"
                    )
    return problems


def missing_package_docstrings(package_dir: Path) -> list[str]:
    """Packages whose ``__init__.py`` has no module docstring."""
    return [
        f"{_where(path, 1, package_dir)}: package has no module docstring "
        "(rule: every package's __init__.py says what lives where)"
        for path in sorted(package_dir.rglob("__init__.py"))
        if not ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    ]


def test_no_module_uses_another_modules_private_names():
    problems = private_name_uses(PACKAGE)
    assert not problems, "\n" + "\n".join(problems)


def test_no_module_or_class_is_too_long():
    problems = size_problems(PACKAGE)
    assert not problems, "\n" + "\n".join(problems)


def test_every_package_has_a_docstring():
    problems = missing_package_docstrings(PACKAGE)
    assert not problems, "\n" + "\n".join(problems)


FAKE = {
    "__init__.py": "from .b import _from_the_init\n",
    "a.py": (
        '"""A module."""\n'
        "from . import b\n"
        "from .b import _helper, public\n"
        "from pkg.sub.c import _deep as d\n"
        "import pkg.sub.c\n"
        "import pkg.sub.c as c_mod\n"
        "def f(y=b._in_default):\n"
        "    x = b._secret + c_mod._hidden + pkg.sub.c._full + b.__version__\n"
        "    return x + public._not_a_module + _own\n"
        "def g(b):\n"
        "    return b._argument_shadows_the_module\n"
        "def h():\n"
        "    from .sub import c\n"
        "    return c._late\n"
        "class K:\n"
        "    from . import b as kb\n"
        "    def m(self):\n"
        "        return kb._unbound_in_methods + self._own\n"
        "_own = 1\n"
    ),
    "b.py": "_helper = public = 1\n__version__ = '1'\nfrom .a import __doc__\n",
    "sub/__init__.py": "",
    "sub/c.py": "from .. import b\nfrom ..b import _up\nx = b._x\nfrom . import _sibling\n",
}


@pytest.fixture
def fake_package(tmp_path):
    root = tmp_path / "pkg"
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_private_name_check_catches_what_it_should(fake_package):
    found = [p.split(" uses ")[0] for p in private_name_uses(fake_package)]
    assert found == [
        "pkg/__init__.py:1: `from pkg.b import _from_the_init`",
        "pkg/a.py:3: `from pkg.b import _helper`",
        "pkg/a.py:4: `from pkg.sub.c import _deep`",
        "pkg/a.py:7: `pkg.b._in_default`",
        "pkg/a.py:8: `pkg.b._secret`",
        "pkg/a.py:8: `pkg.sub.c._full`",
        "pkg/a.py:8: `pkg.sub.c._hidden`",
        "pkg/a.py:14: `pkg.sub.c._late`",
        "pkg/sub/c.py:2: `from pkg.b import _up`",
        "pkg/sub/c.py:3: `pkg.b._x`",
        "pkg/sub/c.py:4: `from pkg.sub import _sibling`",
    ]
    assert all(
        "(rule: no private names across modules" in p for p in private_name_uses(fake_package)
    )


def test_the_size_and_docstring_checks_catch_what_they_should(fake_package):
    (fake_package / "big.py").write_text(
        "class Small:\n    pass\n\n\nclass Big:\n" + "    x = 1\n" * MAX_CLASS_LINES
        + "\n" * (MAX_MODULE_LINES - MAX_CLASS_LINES)
    )  # fmt: skip
    assert size_problems(fake_package) == [
        f"pkg/big.py:1: module has {MAX_MODULE_LINES + 5} lines "
        f"(rule: at most {MAX_MODULE_LINES} lines per module)",
        f"pkg/big.py:5: class Big has {MAX_CLASS_LINES + 1} lines "
        f"(rule: at most {MAX_CLASS_LINES} lines per class)",
    ]
    assert missing_package_docstrings(fake_package) == [
        f"pkg/{name}:1: package has no module docstring "
        "(rule: every package's __init__.py says what lives where)"
        for name in ("__init__.py", "sub/__init__.py")
    ]


def test_the_workflow_uses_only_public_names_of_the_package():
    """The rules call the package through its public names, like any script."""
    found = []
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]:
        # Snakemake syntax is not Python: read the import lines
        for n, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if text.startswith("from spatialfair") and " import " in text:
                names = text.split(" import ", 1)[1].strip("() ").split(",")
                for name in (x.strip().split(" as ")[0] for x in names):
                    if is_private(name):
                        found.append(f"{path.relative_to(ROOT)}:{n}: `{text}` (rule: public names)")
    assert found == []


def documented_layers() -> dict[str, int]:
    """Top-level module or sub-package -> layer, from docs/ARCHITECTURE.md's layer table."""
    layers = {}
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        if re.match(r"\| \d\. ", line):
            number, names = line.split("|")[1:3]
            for name in re.findall(r"`(\w+)/?`", names):
                layers[name] = int(number.strip().split(".")[0])
    return layers


def layer_violations(package_dir: Path, layers: dict[str, int]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, and unlisted modules."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if len(parts) < 2 or parts == (package_dir.name, "__init__"):
            continue
        me = parts[1]
        if me not in layers:
            found.append(f"{path.relative_to(ROOT)}: `{me}` is in no layer of docs/ARCHITECTURE.md")
            continue
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                targets = (
                    [base + node.module.split(".")]
                    if node.module
                    else [base + [a.name] for a in node.names]
                )
            else:
                targets = [(node.module or "").split(".")]
            for target in targets:
                if target[0] != package_dir.name or len(target) < 2 or target[1] not in layers:
                    continue
                if layers[target[1]] > layers[me]:
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno}: layer {layers[me]} `{me}` "
                        f"imports layer {layers[target[1]]} `{target[1]}` (rule: import only "
                        "from your layer or below, docs/ARCHITECTURE.md)"
                    )
    return found


def test_imports_follow_the_documented_layers():
    layers = documented_layers()
    assert len(layers) > 40 and layers["errors"] == 0 and layers["cli"] == 4
    assert layer_violations(PACKAGE, layers) == []


def test_the_layer_check_catches_an_upward_import():
    layers = documented_layers()
    layers["io"] = 3  # pretend io sat above store: store imports io
    assert any("`store` imports layer 3 `io`" in v for v in layer_violations(PACKAGE, layers))
