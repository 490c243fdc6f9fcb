"""The layout's rules, checked on the source: common/ names no method, and a method folder
imports only common/ (and itself), so each folder runs with common/ alone."""

import ast
import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("lagnet", "abdnet", "iabnet", "iaunet", "apnet")
# Names of the methods in any spelling; a citation in a docstring or comment is fine.
METHOD_NAME = re.compile(r"abd|lagnet|lag-net|iab|iau|ianet|apnet|torchreid2018", re.IGNORECASE)


def python_files(folder):
    return sorted((PROJECT_ROOT / folder).rglob("*.py"))


def imported_packages(path):
    """The top-level packages a file imports."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def code_words(path):
    """Identifiers and string constants of a file, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            yield node.lineno, node.value


def test_common_names_no_method():
    offending = [f"{path.relative_to(PROJECT_ROOT)}:{line}: {word!r}"
                 for path in python_files("common") for line, word in code_words(path)
                 if METHOD_NAME.search(word)]
    assert not offending, "method-specific code in common/:\n" + "\n".join(offending)


def test_common_imports_no_method_and_no_bench():
    for path in python_files("common"):
        wrong = imported_packages(path) & {*METHODS, "bench"}
        assert not wrong, f"{path.relative_to(PROJECT_ROOT)} imports {wrong}"


@pytest.mark.parametrize("method", METHODS)
def test_a_method_imports_only_common_and_itself(method):
    allowed = {method, "common"}
    for path in python_files(method) + python_files(f"tests/{method}"):
        wrong = imported_packages(path) & ({*METHODS, "bench"} - allowed)
        assert not wrong, f"{path.relative_to(PROJECT_ROOT)} imports {wrong}"
