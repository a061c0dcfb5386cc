"""De-identified research projects (issue 19)."""
