"""Programs the tests run in a fresh Python: ``python -m tests.programs.NAME ARGS``.

Each is a module, so ruff and mypy read it like the rest of the code; the
tests start them with :func:`tests.support.program` and its companions. A
module with several scenarios takes the scenario's name as its first
argument. They import procwork from this checkout (the tests run them with
it first on ``PYTHONPATH``) and never import a test module.
"""
