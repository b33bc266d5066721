"""Run reports: summary, plots, confusion analysis and paired-bootstrap comparisons (seed 000 §5)."""

from loralab.report.build import ReportPaths, build_report
from loralab.report.compare import Difference, paired_bootstrap
from loralab.report.load import ReportError, Run, load_run

__all__ = ["Difference", "ReportError", "ReportPaths", "Run", "build_report", "load_run", "paired_bootstrap"]
