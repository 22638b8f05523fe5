"""The rule of tests/__init__.py holds: no test module lives beside the code."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_test_module_outside_tests() -> None:
    strays = sorted(
        str(path.relative_to(ROOT))
        for folder in ("libs", "services", "tools", "bench")
        for path in (ROOT / folder).rglob("test_*.py")
    )
    assert strays == [], "tests live under tests/ (see tests/__init__.py)"
