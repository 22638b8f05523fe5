"""`teste2e`, Merak's end-to-end test against a running stack: the command (`cli`), its options and the
configs built from them (`options`), the run over gRPC (`flow`) or over Merak's REST API (`rest`), and
what it reports (`report`)."""

from merak_tools.teste2e.cli import main, main_async, parse, write_reports
from merak_tools.teste2e.flow import Runner, local_namespaces
from merak_tools.teste2e.options import Options, build_configs, subnet_plan, vpc_block
from merak_tools.teste2e.report import E2EError, Report, print_summary
from merak_tools.teste2e.rest import REST_PATHS, RestRunner

__all__ = [
    "REST_PATHS",
    "E2EError",
    "Options",
    "Report",
    "RestRunner",
    "Runner",
    "build_configs",
    "local_namespaces",
    "main",
    "main_async",
    "parse",
    "print_summary",
    "subnet_plan",
    "vpc_block",
    "write_reports",
]
