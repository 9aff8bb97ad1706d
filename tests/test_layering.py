"""DESIGN.md's one-way rule, as written there: foundations (config, paths, manifest, store, stage, data,
models, training, presets) <- sparsity <- procedures (lottery, search, structure) <- analysis <-
experiments <- report <- cli."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "ticketlab"
LAYERS = {
    "config": 0, "paths": 0, "manifest": 0, "store": 0, "stage": 0, "data": 0, "models": 0, "training": 0, "presets": 0,
    "sparsity": 1,
    "lottery": 2, "search": 2, "structure": 2,
    "analysis": 3,
    "experiments": 4,
    "report": 5,
    "cli": 6,
}


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def upward_imports() -> set[str]:
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts == ("ticketlab", "__init__"):  # the public API gathers every layer
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        own = layer_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            upward |= {f"{module} imports {name}" for name in names
                       if name.startswith("ticketlab.") and layer_of(name) > own}
    return upward


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == set()


def test_every_top_level_module_has_a_layer():
    tops = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    tops |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops <= set(LAYERS), tops - set(LAYERS)
