"""The layers of docs/DESIGN.md hold: no package imports one above it, policies never import the simulator, and the
packages below the agents never import torch."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Bottom to top; a module may import its own layer and those below it.
LAYERS = ("sim", "scenarios", "metrics", "policies", "agents", "sim.envs", "training", "w0sim")
NO_TORCH = {"sim", "scenarios", "metrics", "sim.envs"}


def layer_of(module: str) -> str | None:
    if module == "sim.envs" or module.startswith("sim.envs."):
        return "sim.envs"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_module_imports_a_layer_above_its_own():
    broken = []
    for top in {name.split(".")[0] for name in LAYERS}:
        for path in sorted((REPO / top).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            own = layer_of(module)
            for name in imports(path):
                other = layer_of(name)
                if other is not None and LAYERS.index(other) > LAYERS.index(own):
                    broken.append(f"{module} imports {name}")
                if own == "policies" and other == "sim":
                    broken.append(f"{module} imports the simulator ({name})")
                if own in NO_TORCH and name.split(".")[0] == "torch":
                    broken.append(f"{module} imports torch")
    assert not broken, "\n".join(broken)


def test_the_checker_sees_an_upward_import():
    assert layer_of("sim.envs.navsim_env") == "sim.envs" and layer_of("sim.geometry") == "sim"
    assert LAYERS.index(layer_of("agents.base")) > LAYERS.index(layer_of("sim.world_view"))
    assert layer_of("numpy") is None
