"""The version of the procwork distribution, written here and nowhere else.

The three packages ship as one distribution, so they share one version:
``untwisted.__version__``, ``clockwork.__version__`` and
``procwork.__version__`` are this string, and pyproject.toml reads it from
here (``[tool.setuptools.dynamic]``) for the distribution's metadata. It
lives in untwisted because that is the lowest layer, the one the other two
import anyway; a constant costs nothing at import, where asking
``importlib.metadata`` would cost milliseconds (see CHANGELOG.md for what
each version changed).
"""

__version__ = "0.1.0"
