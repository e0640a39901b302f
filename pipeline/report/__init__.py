"""Report: the run manifest and report.md / report.html, generated from the run outputs only."""
