"""The engine stays headless: importing necrocode.dispatcher (and every module in it) in a fresh
interpreter loads no textual, click or rich."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import necrocode.dispatcher

FORBIDDEN = ("textual", "click", "rich")


def dispatcher_modules() -> list[str]:
    """Every module under dispatcher/ that exists now (the package grows as parts land)."""
    pkg = necrocode.dispatcher
    names = [pkg.__name__]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
        if info.name.rpartition(".")[2] == "__main__":
            continue  # running it is not importing it
        names.append(info.name)
    return sorted(names)


SCRIPT = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # an optional SDK missing is not a hygiene problem
        failed[name] = repr(exc)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"textual", "click", "rich"})
print(json.dumps({"loaded": loaded, "failed": failed}))
"""


def run_fresh(*modules: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, *modules], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_package_import_loads_no_ui_library() -> None:
    result = run_fresh("necrocode.dispatcher")
    assert result == {"loaded": [], "failed": {}}


def test_every_dispatcher_module_loads_no_ui_library() -> None:
    modules = dispatcher_modules()
    assert "necrocode.dispatcher.config_loader" in modules
    result = run_fresh(*modules)
    assert result["loaded"] == [], f"a dispatcher module pulled in {result['loaded']}"


def test_lazy_exports_load_no_ui_library() -> None:
    script = (
        "import sys, necrocode.dispatcher as d\n"
        "for name in d.__all__:\n"
        "    try:\n"
        "        getattr(d, name)\n"
        "    except Exception:\n"
        "        pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'click', 'rich'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
