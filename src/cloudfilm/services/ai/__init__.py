"""AI assistance (issue 19): algorithms, the UPS worklist, plug-in runs and results."""
