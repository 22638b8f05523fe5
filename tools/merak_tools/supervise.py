"""`python -m merak_tools.supervise`: the local stack's supervisor, started last by `merak up`.

Every second it looks at the stack's components (Redis, Temporal, OVN central, the services, the
compute workers): one whose pid file is there but whose process is gone died (a crash, an OOM kill, kill
-9), and is started again, after 1 s, doubling to 30 s while restarts do not last. A component
without a pid file is not meant to run: `merak down` stops the supervisor first and removes each pid
file before it stops the process, so nothing is restarted behind it. The services then find each
other again (clients reconnect; calls made meanwhile answer UNAVAILABLE and are retried).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

from merak.logs import configure_logging, get_logger
from merak_tools.localstack import SUPERVISOR, LocalStack, StackError, StackSettings

log = get_logger(__name__)
SETTINGS_ENV = "MERAK_STACK_SETTINGS"
FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0
LASTING = 60.0  # a restart that lived this long resets the wait


@dataclass
class Supervisor:
    """Restarts the components of `stack` that died; `check` is one look (called every second)."""

    stack: LocalStack
    wait: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    restarted_at: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    def check(self, now: float | None = None) -> list[str]:
        """Restart what is due; returns the names restarted."""
        now = time.monotonic() if now is None else now
        started = []
        for component in self.stack.components:
            name = component.name
            if name == SUPERVISOR or not self.stack.pid_file(component).exists():
                continue
            if self.stack.running_pid(component) is not None:
                if now - self.restarted_at.get(name, -LASTING) >= LASTING:
                    self.wait.pop(name, None)
                continue
            if name not in self.due:
                wait = self.wait.get(name, FIRST_WAIT)
                self.due[name] = now + wait
                log.warning("component_died", component=name, restart_in=wait)
                continue
            if now < self.due[name]:
                continue
            del self.due[name]
            try:
                self.stack.start_component(component)
            except (StackError, OSError) as exc:
                # Tried again later, waiting longer; the supervisor itself carries on.
                self.wait[name] = min(LONGEST_WAIT, self.wait.get(name, FIRST_WAIT) * 2)
                log.error("component_restart_failed", component=name, error=str(exc))
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.restarted_at[name] = now
            self.wait[name] = min(LONGEST_WAIT, self.wait.get(name, FIRST_WAIT) * 2)
            log.info("component_restarted", component=name, restarts=self.restarts[name])
            started.append(name)
        return started


def main() -> None:
    """Supervise the stack the environment describes until SIGTERM."""
    settings = StackSettings.model_validate_json(os.environ[SETTINGS_ENV])
    configure_logging(settings.log_level, "json", service="supervisor")
    supervisor = Supervisor(LocalStack(settings, out=lambda line: log.info("stack", line=line)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("supervisor_started", state_dir=str(settings.state_dir))
    while not stop.wait(1.0):
        supervisor.check()
    log.info("supervisor_stopped")


if __name__ == "__main__":
    main()
