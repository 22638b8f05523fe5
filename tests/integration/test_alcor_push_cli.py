"""`merak alcor push FILE` (#29 item 7): a goal state from a JSON or text file sent to an agent's
GoalStateProvisioner over a real socket, its reply printed; a file that is not a goal state is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format

from merak_tools.cli import main
from services.agent.goalstate.record import RecordingApplier
from tests.unit.agent.test_goalstate import PORT_ID, dpm_message, provisioner_server


async def test_a_goal_state_file_is_pushed_and_its_reply_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applier = RecordingApplier()
    async with provisioner_server(applier) as port:
        address = f"127.0.0.1:{port}"
        as_json, as_text = tmp_path / "gs.json", tmp_path / "gs.txt"
        as_json.write_text(json_format.MessageToJson(dpm_message()))
        as_text.write_text(text_format.MessageToString(dpm_message()))
        for path in (as_json, as_text):
            code = await asyncio.to_thread(main, ["alcor", "push", str(path), "--address", address])
            assert code == 0
            printed = capsys.readouterr().out
            assert "PORT" in printed and PORT_ID in printed and "SUCCESS" in printed, printed
        assert PORT_ID in applier.ports
        code = await asyncio.to_thread(main, ["alcor", "push", str(as_json), "--address", address, "--json"])
        assert code == 0 and '"operationStatuses"' in capsys.readouterr().out
        bad = tmp_path / "bad.json"
        bad.write_text('{"no_such_field": 1}')
        assert await asyncio.to_thread(main, ["alcor", "push", str(bad), "--address", address]) == 2
        assert "not a GoalStateV2" in capsys.readouterr().out
