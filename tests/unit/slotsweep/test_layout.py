"""The library's import graph: no circle (type-only imports included) and no arrow up the wings.

Every `import`/`from ... import` of a slotsweep module anywhere in src/slotsweep (inside functions
and `if TYPE_CHECKING:` blocks too) is an arrow. Wings are listed bottom to top; a module may
import its own wing and the wings below it, never one above.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"

# Bottom to top. The base modules are one layer: every wing may use them.
LAYERS: list[set[str]] = [
    {
        "slotsweep.errors",
        "slotsweep.contracts",
        "slotsweep.config",
        "slotsweep.cli",
        "slotsweep.lean_timm",
        "slotsweep.metric_names",
        "slotsweep.numerics",
        "slotsweep.losses",
        "slotsweep.optim",
        "slotsweep.cache",
    },
    {"slotsweep.runs"},
    {"slotsweep.models", "slotsweep.data"},
    {"slotsweep.build"},
    {"slotsweep.evaluation"},
    {"slotsweep.results"},
    {"slotsweep.training"},
    {"slotsweep.sweeps"},
]
# Wings in one layer that must not import each other.
APART = [("slotsweep.models", "slotsweep.data")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every slotsweep module `path` imports (a `from pkg import name` counts as pkg.name when
    that is a module, else as pkg)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("slotsweep")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slotsweep"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {_module_name(p): p for p in sorted((SRC / "slotsweep").rglob("*.py"))}
GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _wing(module: str) -> str:
    for layer in LAYERS:
        for wing in layer:
            if module == wing or module.startswith(wing + "."):
                return wing
    return module


def _layer(module: str) -> int:
    wing = _wing(module)
    return next((i for i, layer in enumerate(LAYERS) if wing in layer), -1)


def test_every_module_has_a_wing():
    unplaced = [m for m in MODULES if m != "slotsweep" and _layer(m) < 0]
    assert not unplaced, f"add these to a layer of LAYERS: {unplaced}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "slotsweep"))
def test_no_import_up_the_wings(module: str):
    upward = [
        target
        for target in GRAPH[module]
        if target != "slotsweep" and _layer(target) > _layer(module) and _wing(target) != _wing(module)
    ]
    assert not upward, f"{module} (wing {_wing(module)}) imports a wing above it: {upward}"
    apart = [t for t in GRAPH[module] if (_wing(module), _wing(t)) in APART + [(b, a) for a, b in APART]]
    assert not apart, f"{module} imports {apart}, a wing beside it"


def test_no_import_circle():
    """Depth-first search over the module graph; any back edge is a circle."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target in GRAPH and state.get(target) is None and (circle := visit(target)):
                return circle
        state[node] = 2
        path.pop()
        return None

    for module in sorted(GRAPH):
        if state.get(module) is None and (circle := visit(module)):
            pytest.fail(f"import circle: {' -> '.join(circle)}")


def test_models_know_nothing_of_lightning_hydra_or_wandb():
    """models/ and what it imports from slotsweep are free of Lightning, Hydra and W&B."""
    banned = ("lightning", "hydra", "wandb", "omegaconf")
    seen, todo = set(), [m for m in MODULES if _wing(m) == "slotsweep.models"]
    while todo:
        module = todo.pop()
        if module in seen or module not in MODULES:
            continue
        seen.add(module)
        tree = ast.parse(MODULES[module].read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] in banned]
            assert not bad, f"{module} imports {bad} (models/ must stay free of them)"
        todo += GRAPH[module]
