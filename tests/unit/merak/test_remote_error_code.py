"""What a remote service's error reply may put in our error messages: Alcor's error code, nothing else
(a listener at a wrong Alcor URL answered "INTERNAL-ONLY-DATA: db_password=...", and we repeated it)."""

from __future__ import annotations

import json

from merak.errors import LOGGED_BODY, logged_body, remote_error_code


def test_alcor_error_code_is_kept() -> None:
    body = json.dumps({"status": 412, "error": "Precondition Failed", "message": "SecurityGroupRequired"})
    assert remote_error_code(body.encode()) == "SecurityGroupRequired"


def test_free_text_is_never_repeated() -> None:
    leaky = {"error": "Bad Request", "message": "INTERNAL-ONLY-DATA: db_password=secret"}
    assert remote_error_code(json.dumps(leaky).encode()) == ""
    assert remote_error_code(json.dumps({"message": "Node Id n1 not existing"}).encode()) == ""
    assert remote_error_code(json.dumps({"message": "hunter2"}).encode()) == ""  # not a code's shape
    assert remote_error_code(json.dumps({"token": "Secret"}).encode()) == ""
    assert remote_error_code(b"db_password=hunter2\nuser=root") == ""
    assert remote_error_code(b"") == ""
    assert remote_error_code(json.dumps({"message": "X" + "y" * 200}).encode()) == ""


def test_logs_keep_only_the_start_of_a_body() -> None:
    assert logged_body(b"a" * 5000) == "a" * LOGGED_BODY
    assert logged_body(b"\xff ok") == "\ufffd ok"
