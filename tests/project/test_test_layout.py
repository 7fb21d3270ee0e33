"""The tests mirror the packages, and share code only through support modules.

A test module lives in the folder of the package it tests (``tests/untwisted``,
``tests/clockwork``, ``tests/procwork`` for the process core,
``tests/supervisor``, ``tests/monitor``, ``tests/cli``, ``tests/contrib``) or,
checking the code base as a whole, in ``tests/project``. What two test modules
need alike lives in ``tests/support/`` (or is a fixture in a ``conftest.py``),
and the programs tests run in a child Python are modules of ``tests/programs/``:
no module imports a test module, so moving or splitting one never breaks
another, and running one module never runs another's import side effects.
"""

from __future__ import annotations

import ast
import itertools
import textwrap
import tomllib
from pathlib import Path

from tests.support import ROOT

TESTS = ROOT / "tests"

FOLDERS = {
    "untwisted",
    "clockwork",
    "procwork",
    "supervisor",
    "monitor",
    "cli",
    "contrib",
    "project",
}
"""The folders that hold test modules: one per package, and the project's."""

OTHER_FOLDERS = {"support", "programs"}
"""The folders of code that tests share: helpers, and programs run in children."""


def is_test_module(module: str) -> bool:
    """Whether the dotted ``module`` names a test module or a conftest."""
    last = module.rpartition(".")[2]
    return last.startswith("test_") or last == "conftest"


def imports_of_test_modules(source: str, path: str) -> list[str]:
    """``path:line: module`` for every import of a test module in ``source``.

    Imports inside functions count (a child Python's program imports too), and
    so do ``from tests.x import test_y`` and relative imports.
    """
    found: list[str] = []
    nodes = sorted(
        (n for n in ast.walk(ast.parse(source, path)) if isinstance(n, ast.stmt)),
        key=lambda n: n.lineno,
    )
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            dot = "" if base.endswith(".") else "."
            names = [base] + [f"{base}{dot}{alias.name}" for alias in node.names]
        else:
            continue
        found.extend(f"{path}:{node.lineno}: {name}" for name in names)
    return [line for line in found if is_test_module(line.rpartition(" ")[2])]


MAX_PROGRAM_LINES = 10
"""The longest program (non-blank lines) a test may give ``python -c`` in a
string; a longer one is a module of tests/programs, which ruff and mypy read."""

RUNS_CODE = {"run_child", "python_child"}
"""The helpers of tests.support that run a string of code in a child Python."""


def _string(node: ast.expr | None, strings: dict[str, str]) -> str | None:
    """The text ``node`` evaluates to, if it is made of literals: a string, a
    name bound to one, ``textwrap.dedent(...)`` of one, a concatenation, an
    f-string's literal parts."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return strings.get(node.id)
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "textwrap.dedent":
        return _string(node.args[0] if node.args else None, strings)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts = [_string(node.left, strings), _string(node.right, strings)]
        return "".join(p for p in parts if p is not None) or None
    if isinstance(node, ast.JoinedStr):
        return "".join(_string(v, strings) or "" for v in node.values)
    return None


def programs_in_strings(source: str, path: str) -> list[str]:
    """``path:line: N lines`` for every program longer than
    :data:`MAX_PROGRAM_LINES` that ``source`` runs from a string: given to
    ``run_child``/``python_child`` or after ``"-c"`` in a command line."""
    tree = ast.parse(source, path)
    strings: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                text = _string(node.value, strings)
                if text is not None:
                    strings[target.id] = text
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr):
            continue
        code: ast.expr | None = None
        if isinstance(node, ast.Call) and ast.unparse(node.func) in RUNS_CODE:
            code = node.args[0] if node.args else None
        elif isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for before, item in itertools.pairwise(items):
                if isinstance(before, ast.Constant) and before.value == "-c":
                    code = item
        text = _string(code, strings)
        if text is None:
            continue
        lines = [line for line in textwrap.dedent(text).splitlines() if line.strip()]
        if len(lines) > MAX_PROGRAM_LINES:
            found.append(f"{path}:{node.lineno}: {len(lines)} lines")
    return found


def python_files() -> list[Path]:
    """The Python files of the tests and the benchmarks."""
    return sorted([*TESTS.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def test_no_module_imports_a_test_module() -> None:
    """Helpers two test modules share are in tests/support, never in a test module."""
    found = []
    for path in python_files():
        where = path.relative_to(ROOT).as_posix()
        found.extend(imports_of_test_modules(path.read_text(encoding="utf-8"), where))
    assert found == []


def test_an_import_of_a_test_module_is_found_wherever_it_is_written() -> None:
    """The check above sees top-level, function-level and relative imports."""
    source = textwrap.dedent(
        """
        import tests.monitor.test_e2e
        from tests.monitor.test_e2e import MonitorProcess
        from tests.support import wait
        from tests.monitor import test_e2e, helpers
        from .test_e2e import get
        from . import conftest

        def later():
            from tests.procwork.test_lifeline import GONE_WITHIN
        """
    )
    assert imports_of_test_modules(source, "t.py") == [
        "t.py:2: tests.monitor.test_e2e",
        "t.py:3: tests.monitor.test_e2e",
        "t.py:5: tests.monitor.test_e2e",
        "t.py:6: .test_e2e",
        "t.py:7: .conftest",
        "t.py:10: tests.procwork.test_lifeline",
    ]


def test_a_program_a_test_runs_in_a_child_python_is_a_module_when_it_is_long() -> None:
    """A child's program of more than ten lines is a module of tests/programs
    (``tests.support.program``), where ruff and mypy read it, not a string."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        found.extend(programs_in_strings(path.read_text(encoding="utf-8"), where))
    assert found == []


def test_a_long_program_in_a_string_is_found_however_it_is_handed_over() -> None:
    """The check above sees run_child, python_child and ``-c`` in a command
    line, with the code inline, in a name, dedented or concatenated."""
    long = "\n".join(f"x{i} = {i}" for i in range(11))
    short = "\n".join(f"x{i} = {i}" for i in range(10))
    source = textwrap.dedent(
        f"""
        LONG = {long!r}
        SHORT = {short!r}
        run_child(LONG)
        run_child(SHORT)
        with python_child(textwrap.dedent(LONG), "arg"):
            pass
        subprocess.run([PY, "-c", "import os\\n" + SHORT, "arg"])
        subprocess.run([PY, "-c", SHORT])
        """
    )
    assert programs_in_strings(source, "t.py") == [
        "t.py:4: 11 lines",
        "t.py:6: 11 lines",
        "t.py:8: 11 lines",
    ]


def test_every_test_module_is_in_the_folder_of_a_package_or_of_the_project() -> None:
    """No test module is left at the top of tests/ or in a folder of its own."""
    misplaced = [
        path.relative_to(ROOT).as_posix()
        for path in TESTS.rglob("test_*.py")
        if path.parent.parent != TESTS or path.parent.name not in FOLDERS
    ]
    assert misplaced == []


def test_every_folder_of_the_tests_is_a_package() -> None:
    """Each folder has an __init__.py, so its modules import as tests.<folder>.x
    and two folders may hold modules of the same name."""
    folders = {path.parent for path in TESTS.rglob("*.py")}
    assert (
        sorted(
            folder.relative_to(ROOT).as_posix()
            for folder in folders
            if not (folder / "__init__.py").is_file()
        )
        == []
    )
    assert {folder.name for folder in folders if folder != TESTS} <= (
        FOLDERS | OTHER_FOLDERS
    )


def test_the_default_run_deselects_nothing_and_the_markers_are_registered() -> None:
    """``python -m pytest`` (the README's command, and CI's) runs every test;
    ``slow`` and ``e2e`` are known markers, and a misspelt one is an error."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    addopts = options["addopts"].split()
    assert "-m" not in addopts and not any(o.startswith("-m") for o in addopts)
    assert "--strict-markers" in addopts
    assert {line.partition(":")[0] for line in options["markers"]} == {"slow", "e2e"}
