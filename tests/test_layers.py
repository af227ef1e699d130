"""The library's packages form layers, each importing only from the layers below it (and its
own package), and no module imports itself back through others: the folders read in the order
of the pipeline."""

from __future__ import annotations

from pathlib import Path

from advlab.core.closure import ROOT, direct_imports

# lowest first; a package may import only from the packages before it
LAYERS = ("core", "params", "data", "models", "attacks", "evaluation", "training", "reporting",
          "experiments")


def package_of(path: str) -> str:
    parts = Path(path).parts  # advlab/<package>/<module>.py, or advlab/__init__.py
    return parts[1] if len(parts) > 2 else "advlab"


def library_imports() -> dict[str, set[str]]:
    return {path.relative_to(ROOT).as_posix(): direct_imports(path)
            for path in sorted((ROOT / "advlab").rglob("*.py"))}


def test_every_package_has_a_layer():
    assert {package_of(path) for path in library_imports()} == {"advlab", *LAYERS}


def test_no_module_imports_from_a_higher_layer():
    rank = {name: i for i, name in enumerate(LAYERS)} | {"advlab": -1}
    upward = sorted(f"{path} imports {imported}" for path, imports in library_imports().items()
                    for imported in imports
                    if rank[package_of(imported)] > rank[package_of(path)])
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    """Importing a module runs its packages' __init__.py first, which may import the package's
    own modules: those edges are the package's, not a cycle."""
    graph = {path: {imported for imported in imports
                    if not (imported.endswith("/__init__.py")
                            and Path(path).is_relative_to(Path(imported).parent))}
             for path, imports in library_imports().items()}
    done: set[str] = set()

    def visit(path: str, trail: list[str]) -> None:
        if path in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(path):], path]))
        if path not in done:
            for imported in sorted(graph[path]):
                visit(imported, [*trail, path])
            done.add(path)

    for path in graph:
        visit(path, [])
