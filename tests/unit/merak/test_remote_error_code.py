"""What a remote service's error reply may put in our error messages: Alcor's error code, an OVSDB
error's name, nothing else (a listener at a wrong Alcor URL answered "INTERNAL-ONLY-DATA:
db_password=...", and we repeated it)."""

from __future__ import annotations

import json

from merak.errors import LOGGED_BODY, logged_body, remote_error_code
from merak.ovs import ovsdb_error_kind
from services.network.plugins.ovn.ovsdb import error_kind


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


def test_an_ovsdb_error_shows_only_its_name_when_it_is_one_of_the_protocols() -> None:
    assert ovsdb_error_kind({"error": "constraint violation", "details": "row 'db_password' ..."}) == (
        "constraint violation"
    )
    assert ovsdb_error_kind({"error": "INTERNAL-ONLY-DATA: db_password=secret"}) == "an error reply"
    assert ovsdb_error_kind("unknown database") == "an error reply"  # not an error object
    assert ovsdb_error_kind(None) == "an error reply"


def test_ovsdbapps_errors_become_their_kind() -> None:
    quoted = RuntimeError('OVSDB Error: {"details":"insert ... read only mode","error":"not allowed"}')
    assert error_kind(quoted) == "not allowed"
    assert error_kind(RuntimeError("OVSDB Error: no error details available")) == "an error reply"
    assert error_kind(RuntimeError("Cannot find Logical_Switch with name=db_password")) == "RuntimeError"
    assert error_kind(TimeoutError("secret")) == "TimeoutError"
