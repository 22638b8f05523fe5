"""What a remote service's error reply may put in our error messages: its own error words, never
its body (a listener at a wrong Alcor URL answered "db_password=...", and we repeated it)."""

from __future__ import annotations

import json

from merak.errors import REMOTE_WORDS, remote_words


def test_alcor_error_words_are_kept() -> None:
    body = json.dumps({"status": 412, "error": "Precondition Failed", "message": "SecurityGroupRequired"})
    assert remote_words(body.encode()) == "Precondition Failed: SecurityGroupRequired"


def test_any_other_body_is_described_not_quoted() -> None:
    said = remote_words(b"db_password=hunter2\nuser=root")
    assert "hunter2" not in said and "29-byte body" in said
    assert "secret" not in remote_words(json.dumps({"token": "secret"}).encode())
    assert remote_words(b"") == "an empty body"


def test_error_words_are_bounded_and_printable() -> None:
    said = remote_words(json.dumps({"message": "x" * 5000 + "\n\x1b[31m"}).encode())
    assert len(said) == REMOTE_WORDS and said.isprintable()
