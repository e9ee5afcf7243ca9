"""The import rule of the layers (DESIGN.md): storage_schemas <- models <- tasks <- flows, and inside tasks
kernels <- storage <- steps. Read from the source (every import, function-level ones included), so a lazy
import that breaks the rule is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package prefix -> module prefixes it must never import
FORBIDDEN = {
    "storage_schemas": ("torch", "prefect", "numba", "models", "tasks", "flows"),
    "models": ("prefect", "tasks", "flows"),
    "tasks.kernels": ("prefect", "tasks.storage", "tasks.steps", "models", "flows", "fsspec", "s3fs"),
    "tasks.storage": ("prefect", "tasks.steps", "models", "flows"),
    "tasks.steps": ("flows",),
}
PREFECT_HOME = "tasks.steps.prefect_tasks"  # the one module of tasks/ that wraps steps in Prefect tasks


def modules():
    for path in sorted(ROOT.glob("**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in ("storage_schemas", "models", "tasks", "flows"):
            continue
        yield ".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path


def imported(path: Path, module: str) -> set[str]:
    names = set()
    package = module.rsplit(".", 1)[0] if not path.name == "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("module,path", list(modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_no_import_runs_back_up_the_layers(module, path):
    names = imported(path, module)
    for layer, banned in FORBIDDEN.items():
        if _under(module, layer):
            bad = sorted(n for n in names for b in banned if _under(n, b))
            assert not bad, f"{module} imports {bad}"
    if _under(module, "tasks") and module != PREFECT_HOME:
        assert not [n for n in names if _under(n, "prefect")], f"{module}: Prefect belongs in {PREFECT_HOME}"
