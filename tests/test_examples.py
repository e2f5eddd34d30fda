"""The examples in the code's docstrings (``>>>``) are true: each module that has some runs
them, so a changed behaviour cannot leave its documentation behind."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WITH_EXAMPLES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for package in ("device", "models", "web", "updates")
    for path in (ROOT / package).rglob("*.py") if ">>>" in path.read_text(encoding="utf-8"))


def test_the_examples_are_found():
    assert {"device.said", "device.text", "web.timeline"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_a_modules_examples_hold(name):
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0, results
