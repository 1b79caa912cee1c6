"""Texts that are on every machine: the docstrings of Python's standard library.

A corpus for offline sweeps and demos. Python's documentation, docstrings
included, is under the PSF License (permissive: use, copy and redistribute with
the notice kept), and it ships with every Python installation, so nothing is
downloaded. Docstrings are English prose about code: sentences, line breaks and
paragraphs, some code. The exact texts depend on the Python version (recorded by
``python_docstrings`` in each text's module list, see ``DOCSTRING_MODULES``).
"""

from __future__ import annotations

import importlib
import inspect
import random
import sys
import warnings

__all__ = ["DOCSTRING_MODULES", "python_docstrings"]

# Pure-Python standard-library modules with prose docstrings, importable everywhere
# (no GUI, no platform-only modules). Not pdb: IPython kernels replace its debugger
# class, so a notebook would see other texts than a script.
DOCSTRING_MODULES = (
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "http.cookies",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "json",
    "logging",
    "mailbox",
    "mimetypes",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest.case",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "zipfile",
)


def _docstrings(module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of a module and its public classes, functions, methods."""
    found = []
    name = module.__name__
    if module.__doc__:
        found.append((name, module.__doc__))
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if obj.__doc__:
            found.append((f"{name}.{attr}", obj.__doc__))
        if inspect.isclass(obj):
            for meth, fn in sorted(vars(obj).items()):
                if not meth.startswith("_") and inspect.isfunction(fn) and fn.__doc__:
                    found.append((f"{name}.{attr}.{meth}", fn.__doc__))
    return found


def python_docstrings(
    n: int | None = None,
    *,
    min_chars: int = 120,
    max_chars: int = 400,
    seed: int = 0,
    with_names: bool = False,
):
    """Docstrings of Python's standard library, cleaned, as a list of texts.

    Parameters
    ----------
    n : int, optional
        How many (all by default), after a seeded shuffle.
    min_chars, max_chars : int
        Keep docstrings of this length (after ``inspect.cleandoc``): long enough to
        hold a few sentences, short enough for a quick sweep (about 25 to 100
        tokens with a BPE tokenizer). Docstrings with doctest examples (``>>>``) are
        left out.
    seed : int, default 0
        Seed of the shuffle (``random.Random(seed)``); the order before it is
        sorted by qualified name, so the list is reproducible on one Python version.
    with_names : bool, default False
        Return ``(qualified_name, text)`` pairs.

    Returns
    -------
    list of str, or of (str, str)

    Examples
    --------
    >>> texts = python_docstrings(3)
    >>> len(texts), all(120 <= len(t) <= 400 for t in texts)
    (3, True)
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` must be None or an int >= 1, got {n!r}.")
    seen, pairs = set(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn on import
        for module_name in DOCSTRING_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # pragma: no cover - a trimmed Python
                continue
            for qualname, doc in _docstrings(module):
                text = inspect.cleandoc(doc).strip()
                if not min_chars <= len(text) <= max_chars or ">>>" in text or text in seen:
                    continue
                seen.add(text)
                pairs.append((qualname, text))
    pairs.sort()
    random.Random(seed).shuffle(pairs)
    if n is not None:
        if n > len(pairs):
            raise ValueError(
                f"`n` = {n}: Python {sys.version_info.major}.{sys.version_info.minor} has "
                f"{len(pairs)} docstrings of {min_chars}..{max_chars} characters."
            )
        pairs = pairs[:n]
    return pairs if with_names else [text for _, text in pairs]
