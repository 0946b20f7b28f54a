"""The package's layers import downward only (README, Architecture): read from the source, every import,
also those inside functions."""
import ast
import graphlib
from pathlib import Path

import rightwhale

PACKAGE = Path(rightwhale.__file__).parent
# bottom to top; a module may import its own layer's modules and those of the layers below
LAYERS = ("core", "geometry", "views", "io", "models", "train", "scorers", "ensemble", "stages", "cli")
# within stages, the stage modules share these and import no other stage
STAGE_BASE = {"rightwhale.stages", "rightwhale.stages.workspace", "rightwhale.stages.crops",
              "rightwhale.stages.fit_classifier"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str = "") -> set[str]:
    """The rightwhale modules a file imports (a name imported from a package counts as its module if it is one):
    absolute and relative imports, and module names given to importlib as text. `package`: the file's own
    package, for its relative imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:           # from .x import y, from .. import z
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            if base.split(".")[0] != "rightwhale":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() or \
                    (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                found.add(sub if is_module else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rightwhale"}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            found |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.split(".")[0] == "rightwhale"}
    return found


def package_of(path: Path) -> str:
    return module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, package_of(p)) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer():
    loose = sorted(m for m in graph() if layer(m) is None and m not in ("rightwhale", "rightwhale.__main__"))
    assert not loose, f"modules outside the layer folders: {loose}"


def test_imports_point_downward():
    upward = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                    if layer(m) and layer(d) and LAYERS.index(layer(d)) > LAYERS.index(layer(m)))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_stage_imports_another_and_no_command_another():
    sideways = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                      if (layer(m) == layer(d) == "stages" and m not in STAGE_BASE and d not in STAGE_BASE)
                      or (layer(m) == layer(d) == "cli" and d != "rightwhale.cli"))
    assert not sideways, "sideways imports:\n" + "\n".join(sideways)


def test_the_import_graph_has_no_circle():
    graphlib.TopologicalSorter(graph()).prepare()      # raises CycleError naming the circle


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checks above could pass by finding nothing: this file's own kind of import is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\n"
                     "def f():\n    from rightwhale.cli.identify import main\n    from rightwhale.core import atomic\n"
                     "    from ..cli import catalogue\n    from .layers import conv\n"
                     "    importlib.import_module('rightwhale.stages.match')\n")
    assert imports_of(probe, "rightwhale.models") == {"rightwhale.cli.identify", "rightwhale.core.atomic",
                                                     "rightwhale.cli.catalogue", "rightwhale.models.layers",
                                                     "rightwhale.stages.match"}


def test_paths_relative_to_the_package_still_find_the_checkout():
    """A module moved one folder deeper must not lose the files it finds beside the package."""
    from rightwhale.io import survey
    assert survey.PROJECT_ANNOTATIONS == PACKAGE.parent / "annotations"
    assert (survey.PROJECT_ANNOTATIONS / "points1.json").is_file()
