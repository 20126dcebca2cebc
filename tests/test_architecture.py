"""The house rules, enforced: import contracts (``.importlinter``), no import-time side effects,
and functions short enough to read (ARCHITECTURE.md, "What may import what")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bridge", "workers", "mappings")
#: The longest a function may be, in lines (its signature and docstring included).
MAX_FUNCTION_LINES = 60


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run(
        [str(lint_imports), "--config", ".importlinter", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.count(" KEPT") == 8, run.stdout


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


_PROBE = """
import json, logging, os, sys
before_env = dict(os.environ)
root_handlers = list(logging.getLogger().handlers)
loggers = {n: (l.level, list(l.filters)) for n, l in logging.root.manager.loggerDict.items()
           if isinstance(l, logging.Logger)}
for name in sys.argv[1:]:
    __import__(name)
changed = [n for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)
           and n in loggers and (l.level, list(l.filters)) != loggers[n]]
# Libraries set up their own loggers as they load; ours (and segment's) must be left alone.
patched = [n for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)
           and n.split(".")[0] in ("bridge", "workers", "mappings", "segment")
           and (l.filters or l.handlers or l.level)]
apps = []
if "celery" in sys.modules:
    from celery import _state
    apps = [repr(a) for a in _state._apps]
print(json.dumps({
    "env": sorted(k for k in set(os.environ) | set(before_env) if os.environ.get(k) != before_env.get(k)),
    "root_handlers": len(logging.getLogger().handlers) - len(root_handlers),
    "loggers": sorted(changed + patched),
    "celery_apps": apps,
}))
"""


def test_importing_every_module_has_no_side_effects() -> None:
    """No Celery app built, no logger patched, no environment written, at import."""
    modules = _modules()
    assert "bridge.ingest.app" in modules and "workers.tasks" in modules
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    effects = json.loads(out.strip().splitlines()[-1])
    assert effects == {"env": [], "root_handlers": 0, "loggers": [], "celery_apps": []}


def _long_functions() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_a_screen() -> None:
    assert _long_functions() == []
