"""The shape of the code (docs/architecture.md): the platform (app/core) uses no domain, a domain
uses only the platform and the domains below it, and no module imports itself in a circle.

Imports are read from the source (every ``import app…`` and ``from app… import``, also inside
functions: a deferred import is a dependency all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# Lowest first. A domain may import the platform and the domains before it in this list.
LAYERS = ["core", "registry", "accounts", "clients", "consent", "documents", "oidc", "sharing", "verify", "admin"]
# The application: assembles the domains (app.main), runs them (cli, asgi, demo, testing, maintenance).
APPLICATION = {"main", "cli", "asgi", "openapi", "models", "demo", "testing", "maintenance"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            found.add(node.module)
            # `from app.x import y` where y is a module
            for alias in node.names:
                if (APP.parent / (node.module + "." + alias.name).replace(".", "/")).with_suffix(".py").exists():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("app."))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in APP.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def area(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def upward(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in edges.items():
        here = area(module)
        for target in targets:
            there = area(target)
            if here == there or here in APPLICATION:
                continue
            if there in APPLICATION:
                wrong.append(f"{module} -> {target} (the application is on top)")
            elif here in LAYERS and there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module} -> {target} (upward: {here} is below {there})")
    return sorted(wrong)


def test_domains_import_only_downward_and_the_platform_imports_no_domain() -> None:
    wrong = upward(graph())
    assert not wrong, "\n".join(wrong)


def test_every_package_under_app_has_its_place() -> None:
    areas = {area(m) for m in graph() if m != "app"}
    assert areas <= set(LAYERS) | APPLICATION, areas - set(LAYERS) - APPLICATION


def circles_of(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_itself_in_a_circle() -> None:
    circles = circles_of(graph())
    assert not circles, circles


def test_the_checks_see_what_they_are_for(tmp_path: Path) -> None:
    planted = tmp_path / "x.py"
    planted.write_text("def f():\n    from app.oidc.provider import Provider\n")
    assert "app.oidc.provider" in imports_of(planted)  # a deferred import counts
    assert upward({"app.consent.service": {"app.oidc.models"}, "app.oidc.models": set()}) == [
        "app.consent.service -> app.oidc.models (upward: consent is below oidc)"
    ]
    assert upward({"app.core.auth": {"app.accounts.models"}}) != []  # the platform uses no domain
    assert upward({"app.verify.router": {"app.main"}}) != []
    assert circles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
