"""A synthetic province for ``cloudfilm demo``: hospitals, residents, exams and their images.

Everything here is deterministic from a seed (UIDs, names, pixels), so a second run
recognises what the archive already holds and sends nothing. Only the command line uses
this package; services never import it.
"""
