"""Layering rules: the UI's first imports stay light (torch, transformers, peft, bitsandbytes and datasets are imported
inside functions, so the app paints before they load), core never imports the UI."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "textual")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_config_and_events_import_nothing_heavy():
    loaded = _loaded_after("import core.config, core.events, core.control, core.errors")
    assert not loaded & set(HEAVY), f"heavy modules loaded: {sorted(loaded & set(HEAVY))}"


def test_tui_cli_and_app_do_not_import_ml_libraries_before_first_paint():
    loaded = _loaded_after("import tui.cli, tui.app")
    heavy_ml = set(HEAVY) - {"textual"}
    assert not loaded & heavy_ml, f"the app imports {sorted(loaded & heavy_ml)} before its first frame"


def test_headless_commands_never_import_textual():
    loaded = _loaded_after("import tui.cli, tui.commands.train, tui.commands.runs, tui.commands.estimate, "
                           "tui.commands.gpus, tui.commands.export, tui.commands.chat")
    assert "textual" not in loaded


def test_resources_import_without_ml_libraries():
    loaded = _loaded_after("import core.resources.gpus, core.resources.shape, core.resources.estimate, "
                           "core.resources.recommend, core.catalog, core.chat, core.chattarget, core.hub, core.tasks")
    assert not loaded & set(HEAVY), f"heavy modules loaded: {sorted(loaded & set(HEAVY))}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_the_ui():
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & {"tui", "textual"})
                 for p in (ROOT / "core").rglob("*.py") if _imports(p) & {"tui", "textual"}}
    assert not offenders, offenders


def test_every_module_starts_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for folder in ("core", "tui") for p in (ROOT / folder).rglob("*.py")
               if ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None]
    assert not missing, f"modules without a one-line docstring: {missing}"


def test_long_modules_say_why_they_are_one_idea():
    """A module over ~400 lines in core/ or tui/ says in its docstring why it is one idea (else: split it)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    unexplained = []
    for path in sorted([*root.glob("core/**/*.py"), *root.glob("tui/**/*.py")]):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 420 and "Over 400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(root)} ({text.count(chr(10))} lines)")
    assert not unexplained, unexplained


def test_the_code_cites_only_documents_in_the_repository():
    import re

    root = Path(__file__).resolve().parents[1]
    missing = set()
    for path in [*root.glob("core/**/*.py"), *root.glob("tui/**/*.py"), *root.glob("bench/*.py")]:
        for name in re.findall(r"\b([\w/.-]+\.md)\b", path.read_text(encoding="utf-8")):
            if not (root / name).is_file() and not (root / "docs" / name).is_file():
                missing.add(f"{path.relative_to(root)}: {name}")
    assert not missing, sorted(missing)
