"""report: one HTML page from the analysis folders."""
