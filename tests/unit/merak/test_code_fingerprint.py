"""`merak up` knows the code its running services were started from."""

from __future__ import annotations

from pathlib import Path

from merak_tools.localstack import code_fingerprint


def test_the_fingerprint_follows_the_python_files_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "a.py"
    module.write_text("x = 1\n")
    first = code_fingerprint([tmp_path])
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.py").write_text("junk")
    (tmp_path / "notes.txt").write_text("not code")
    assert code_fingerprint([tmp_path]) == first
    module.write_text("x = 2\n")
    assert code_fingerprint([tmp_path]) != first
    assert len(code_fingerprint()) == 64  # the stack's own code
