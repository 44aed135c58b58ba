"""Reporting: JSON writers (atomic), Markdown tables, the accuracy-vs-bits plot, progress bars.

Every writer here goes through `qmamba.io_utils.atomic_write`/`atomic_path`: a reader
never sees a half-written file, and an interrupted run leaves the previous file intact.
"""
from qmamba.report.progress import Progress
from qmamba.report.tables import demo_markdown, markdown_table
from qmamba.report.writers import jsonable, write_json, write_text

__all__ = ["Progress", "demo_markdown", "jsonable", "markdown_table", "write_json", "write_text"]
