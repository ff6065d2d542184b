"""Reports: per run (report.md, report.html, summary.csv) and across the runs under a root."""

from benchmark.report.comparative import write_comparative_report
from benchmark.report.run_report import write_run_report

__all__ = ["write_run_report", "write_comparative_report"]
