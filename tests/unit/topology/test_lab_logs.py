"""A deleted lab's logs (services.topology.backends.local.lablogs): where they go, and that only the newest
labs' are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.topology.backends.local.lablogs import LabLogs

START = datetime(2026, 12, 6, 19, 5, 0, tzinfo=UTC)


def run_dir(root: Path, short_id: str) -> Path:
    """A topology's run directory as its agents and chassis leave it: logs, and files that are not logs."""
    path = root / "run" / short_id
    (path / "ovn" / "1").mkdir(parents=True)
    (path / "agent-0.log").write_text(f"{short_id} agent 0\n")
    (path / "agent-1.log").write_text(f"{short_id} agent 1\n")
    (path / "agent-0.pid").write_text("1\n")
    (path / "agent-0.json").write_text("{}\n")
    (path / "ovn" / "1" / "ovn-controller.log").write_text("controller\n")
    (path / "ovn" / "1" / "ovs-vswitchd.log").write_text("vswitchd\n")
    (path / "ovn" / "1" / "db.sock").write_text("")
    return path


def delete(logs: LabLogs, root: Path, short_id: str, when: datetime) -> Path:
    """What the backend's destroy does around stopping the agents; the kept directory."""
    run = run_dir(root, short_id)
    kept = logs.begin(short_id, run, now=when)
    assert kept is not None
    # The agent removes its chassis' files when it stops: the links hold the logs.
    for path in (run / "ovn" / "1").iterdir():
        path.unlink()
    assert logs.finish(kept, run) == 4
    return kept


def test_a_labs_agent_and_chassis_logs_are_kept_as_laid_out(tmp_path: Path) -> None:
    logs = LabLogs(tmp_path / "logs" / "labs", keep=20)
    kept = delete(logs, tmp_path, "3f9a1c", START)
    assert kept == tmp_path / "logs" / "labs" / "20261206T190500Z-3f9a1c"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "agent-0.log",
        "agent-1.log",
        "ovn/1/ovn-controller.log",
        "ovn/1/ovs-vswitchd.log",
    ]
    assert (kept / "agent-1.log").read_text() == "3f9a1c agent 1\n"
    assert (kept / "ovn" / "1" / "ovs-vswitchd.log").read_text() == "vswitchd\n"
    assert not list((tmp_path / "run" / "3f9a1c").glob("*.log"))  # moved, not copied


def test_only_the_newest_labs_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "labs"
    logs = LabLogs(root, keep=2)
    root.mkdir()
    (root / "notes").mkdir()  # not a lab's directory: never touched
    (root / "README").write_text("mine\n")
    for k, short_id in enumerate(("aaaaaa", "bbbbbb", "cccccc")):
        delete(logs, tmp_path, short_id, START + timedelta(minutes=k))
    assert [p.name for p in logs.labs()] == ["20261206T190600Z-bbbbbb", "20261206T190700Z-cccccc"]
    assert (root / "notes").is_dir() and (root / "README").read_text() == "mine\n"
    # The same lab deleted twice within a second keeps both, the later one sorted last.
    again = delete(logs, tmp_path / "again", "cccccc", START + timedelta(minutes=2))
    assert again.name == "20261206T190700Z-cccccc-2"
    assert [p.name for p in logs.labs()] == ["20261206T190700Z-cccccc", again.name]


def test_nothing_is_kept_when_told_so_or_when_there_is_nothing(tmp_path: Path) -> None:
    run = run_dir(tmp_path, "dddddd")
    assert LabLogs(tmp_path / "labs", keep=0).begin("dddddd", run) is None
    assert not (tmp_path / "labs").exists()
    logs = LabLogs(tmp_path / "labs", keep=5)
    assert logs.begin("eeeeee", tmp_path / "run" / "eeeeee") is None  # no run directory
    empty = tmp_path / "run" / "ffffff"
    empty.mkdir()
    kept = logs.begin("ffffff", empty, now=START)
    assert kept is not None
    assert logs.finish(kept, empty) == 0
    assert not kept.exists()  # an empty directory is not left behind
