"""A run's report: tables (pandas), figures (seaborn / matplotlib), Markdown and self-contained HTML."""

from benchmark.report.run_report import write_run_report

__all__ = ["write_run_report"]
