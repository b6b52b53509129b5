"""bias-report: the classifier's confidence on each bias group."""
