"""Diagnostic reports: receiving every format, linking to studies, reading, searching, and
the upload-timeliness figures."""
