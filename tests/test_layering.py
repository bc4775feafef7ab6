"""Data flows one way: no module imports a higher layer, and no two packages import each other.

The layers of cryovae, lowest first (docs/architecture.md)::

    0  cryovae (the root: __version__), errors
    1  geometry, device        conventions; the torch device choice
    2  io                      files
    3  data, simulate          preprocessing / ParticleDataset; simulated stacks
    4  models                  the model contract, registry, priors, networks
    5  runs                    the run directory: config, checkpoints, latents, image cache
    6  training, inference, analysis
    7  workflows               pipelines that join the layers (train_run, the demo)
    8  cli                     thin commands

A module may import its own package and lower layers only; packages of the same layer do not
import one another. The napari plugin sits on top and imports only what the packages' __init__
files re-export. Every ``import`` is read from the source (function-level ones too), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "": 0, "errors": 0,
    "geometry": 1, "device": 1, "distributed": 1,
    "io": 2,
    "data": 3, "simulate": 3,
    "models": 4,
    "runs": 5,
    "training": 6, "inference": 6, "analysis": 6,
    "workflows": 7,
    "cli": 8,
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute ``cryovae`` import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "cryovae":
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "cryovae"]
    return out


def _part(module: str, names: list[str]) -> list[str]:
    """The layer parts (``io``, ``models``, "" for the root) an import reaches."""
    parts = module.split(".")
    if len(parts) > 1:
        return [parts[1]]
    return [n for n in names if n in LAYERS] or [""]  # from cryovae import io / __version__


def _own(package_root: Path, path: Path) -> str:
    rel = path.relative_to(package_root)
    return "" if len(rel.parts) == 1 and rel.stem in ("__init__", "__main__") else rel.parts[0].removesuffix(".py")


def layering_violations(package_root: Path) -> list[str]:
    """Every import under ``package_root`` (a ``cryovae`` folder) of a higher layer or of another
    package of the same layer, as ``file:line ... imports ...`` lines."""
    bad = []
    for path in sorted(package_root.rglob("*.py")):
        own = _own(package_root, path)
        if path.name == "__main__.py" and own == "":
            continue  # ``python -m cryovae`` runs the command line: the very top
        for line, module, names in _imports(path):
            for pkg in _part(module, names):
                if pkg == own or pkg not in LAYERS:
                    continue
                if LAYERS[pkg] > LAYERS[own] or (LAYERS[pkg] == LAYERS[own] and own):
                    bad.append(f"{path.relative_to(package_root.parent)}:{line} ({own or 'root'}, layer "
                               f"{LAYERS[own]}) imports {module} (layer {LAYERS[pkg]})")
    return bad


def package_cycles(package_root: Path) -> list[str]:
    """The packages that lie on an import cycle between packages."""
    edges: dict[str, set[str]] = {}
    for path in package_root.rglob("*.py"):
        own = _own(package_root, path)
        if path.name == "__main__.py" and own == "":
            continue
        for _line, module, names in _imports(path):
            edges.setdefault(own, set()).update(p for p in _part(module, names) if p != own)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in edges.get(start, ()))

    return sorted(p for p in edges if reaches(p, p, {p}))


def test_every_package_of_cryovae_has_a_layer():
    found = {_own(ROOT / "cryovae", p) for p in (ROOT / "cryovae").rglob("*.py")}
    assert found <= set(LAYERS), f"give {sorted(found - set(LAYERS))} a layer here and in docs/architecture.md"


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    bad = layering_violations(ROOT / "cryovae")
    assert not bad, "\n".join(bad)


def test_no_package_cycle():
    assert package_cycles(ROOT / "cryovae") == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The checker itself, on a made-up tree: a lazy import of the trainer inside models, and
    training and inference importing each other."""
    pkg = tmp_path / "cryovae"
    for sub in ("models", "training", "inference"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "models" / "bad.py").write_text("def f():\n    from cryovae.training.loop import fit\n")
    (pkg / "training" / "a.py").write_text("from cryovae.inference import encode\n")
    (pkg / "inference" / "b.py").write_text("import cryovae.training.loop\n")
    bad = layering_violations(pkg)
    assert any(line.startswith("cryovae/models/bad.py:2 (models, layer 4) imports cryovae.training.loop")
               for line in bad)
    assert "cryovae/training/a.py:1 (training, layer 6) imports cryovae.inference (layer 6)" in bad
    assert "cryovae/inference/b.py:1 (inference, layer 6) imports cryovae.training.loop (layer 6)" in bad
    assert package_cycles(pkg) == ["inference", "training"]


@pytest.mark.parametrize("path", sorted((ROOT / "napari_plugin").glob("*.py")), ids=lambda p: p.name)
def test_napari_imports_only_the_public_api(path):
    """``from cryovae.<package> import name`` with ``name`` in the package's ``__all__`` (or a
    top-level module such as ``cryovae.errors``): never a module inside a package."""
    bad = []
    for line, module, names in _imports(path):
        parts = module.split(".")
        if len(parts) > 2:
            bad.append(f"{path.name}:{line} imports {module}")
        elif len(parts) == 2:
            mod = importlib.import_module(module)
            if hasattr(mod, "__path__"):  # a package: only what it re-exports
                bad += [f"{path.name}:{line} imports {module}.{n}, not in its __all__"
                        for n in names if n not in getattr(mod, "__all__", ())]
    assert not bad, "\n".join(bad)
