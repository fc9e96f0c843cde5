"""The package layout keeps its promises: pure folders stay pure, imports flow one way.

The import checks read the source with L{ast} instead of importing it, so they see
every import, also those inside functions (which portproxy uses to keep start-up
lazy), and they need no reactor. Imports made only for type checking (under
C{if TYPE_CHECKING:}) are left out: they do not run.

- The pure modules (L{PURE_FOLDERS}, L{PURE_MODULES}) must import neither C{twisted}
  nor C{autobahn}, directly or through another portproxy module or package: they are
  policy that tests and other code can use without a reactor.
- The modules of the package must not import each other in a cycle: a cycle is two-way
  coupling, and with lazy imports it hides until the wrong module is imported first.
- Imports go down the layers (L{LAYERS}), never up.
- Modules that moved keep their log namespaces, which docs and log filters quote.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "portproxy"

#: Pure modules and folders: every module in these folders, and these modules.
PURE_FOLDERS = ("routing",)
PURE_MODULES = (
    "portproxy.config",
    "portproxy.net.policy",
    "portproxy.http.wire",
    "portproxy.http.response_reader",
    "portproxy.http.headers",
    "portproxy.http.rewrite",
    "portproxy.http.cookies",
    "portproxy.http.setcookie",
    "portproxy.http.errorpages",
    "portproxy.http.h2rules",
    "portproxy.websocket.origin",
    "portproxy.auth.sessions",
    "portproxy.auth.ratelimit",
    "portproxy.auth.redirects",
    "portproxy.auth.cookiepolicy",
    "portproxy.auth.loginpage",
    "portproxy.sharing.access",
    "portproxy.sharing.durations",
    "portproxy.sharing.grants",
    "portproxy.sharing.keys",
    "portproxy.sharing.tokens",
)
FORBIDDEN = ("twisted", "autobahn")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under C{node}, except the bodies of C{if TYPE_CHECKING:}."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def _imported(name: str) -> set[str]:
    """The absolute names of everything module C{name} imports when it runs."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # "from portproxy.http import wire" imports the module portproxy.http.wire.
            found.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if f"{module}.{alias.name}" in MODULES
            )
    return found


def _runs(name: str) -> set[str]:
    """The portproxy modules that importing C{name} runs: the imported modules and the
    packages they are in (importing C{a.b.c} runs C{a/__init__} and C{a/b/__init__})."""
    out: set[str] = set()
    for imported in _imported(name):
        parts = imported.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in MODULES and prefix != name:
                out.add(prefix)
    return out


#: Module -> the portproxy modules it names in its imports: the graph of coupling.
#: A submodule's own package is not an edge unless imported by name (a package's
#: C{__init__} re-exporting its modules is not a cycle).
GRAPH = {
    name: {m for m in _imported(name) if m in MODULES and m != name} for name in MODULES
}
#: Module -> every portproxy module that importing it runs, packages included.
RUNS = {name: _runs(name) for name in MODULES}


def _pure() -> list[str]:
    folders = tuple(f"portproxy.{folder}" for folder in PURE_FOLDERS)
    return sorted(
        name
        for name in MODULES
        if name in PURE_MODULES
        or name in folders
        or name.startswith(tuple(f + "." for f in folders))
    )


def test_pure_module_list_names_existing_modules() -> None:
    missing = [name for name in PURE_MODULES if name not in MODULES]
    assert not missing, f"PURE_MODULES names modules that do not exist: {missing}"
    assert len(_pure()) > len(PURE_MODULES)  # the pure folders hold modules too


@pytest.mark.parametrize("name", _pure())
def test_pure_modules_import_neither_twisted_nor_autobahn(name: str) -> None:
    seen: dict[str, str | None] = {name: None}  # module -> the module that imported it
    todo = [name]
    while todo:
        current = todo.pop()
        for imported in _imported(current):
            top = imported.split(".")[0]
            if top in FORBIDDEN:
                chain = [current]
                while seen[chain[-1]] is not None:
                    chain.append(seen[chain[-1]])  # type: ignore[arg-type]
                path = " <- ".join(chain)
                pytest.fail(f"{name} imports {imported} (through {path})")
        for module in RUNS[current]:
            if module not in seen:
                seen[module] = current
                todo.append(module)


def _cycle() -> list[str] | None:
    """One import cycle among portproxy's modules, or C{None}."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(GRAPH, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(GRAPH):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_function_level_imports() -> None:
    # tap imports the application lazily, inside makeService: it must still count.
    assert "portproxy.runtime.app" in GRAPH["portproxy.tap"]


#: The layers, lowest first (docs/design.rst, "The layout"): a module may import from
#: its own layer and the ones below it, never from one above.
LAYERS = [
    "config",
    "files",
    "routing",
    "net",
    "http",
    "websocket",
    "auth",
    "sharing",
    "ports",
    "web",
    "runtime",
    "tap",
]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: portproxy/__init__ (__version__)


def test_every_folder_and_top_module_has_a_layer() -> None:
    assert {_layer(name) for name in MODULES} - {None} == set(LAYERS)


def test_imports_go_down_the_layers_only() -> None:
    upward = [
        f"{name} -> {imported}"
        for name, imports in sorted(GRAPH.items())
        for imported in sorted(imports)
        if _layer(name) is not None
        and _layer(imported) is not None
        and LAYERS.index(_layer(imported)) > LAYERS.index(_layer(name))  # type: ignore[arg-type]
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


#: Modules that moved into folders keep the log namespace they had (docs quote some).
LOG_NAMESPACES = [
    ("portproxy.runtime.app", "portproxy.app"),
    ("portproxy.runtime.service", "portproxy.service"),
    ("portproxy.runtime.supervisor", "portproxy.workers"),
    ("portproxy.runtime.worker", "portproxy.worker"),
    ("portproxy.net.limits", "portproxy.limits"),
    ("portproxy.net.accept", "portproxy.limits"),
    ("portproxy.http.engine", "portproxy.engine"),
    ("portproxy.http.http2", "portproxy.http2"),
]


@pytest.mark.parametrize(("module", "namespace"), LOG_NAMESPACES)
def test_moved_modules_keep_their_log_namespace(module: str, namespace: str) -> None:
    import importlib

    assert importlib.import_module(module)._log.namespace == namespace


def test_the_access_log_namespace_is_the_one_the_docs_name() -> None:
    from twisted.web.resource import Resource

    from portproxy.web.site import ProxySite

    site = ProxySite(Resource(), reactor=None)
    assert site._access_log.namespace == "portproxy.site.ProxySite"
    docs = PACKAGE.parent / "docs" / "troubleshooting.rst"
    assert "``portproxy.site.ProxySite`` namespace" in docs.read_text(encoding="utf-8")
