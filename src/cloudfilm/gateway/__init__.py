"""The hospital edge gateway (前置机): store and forward from a hospital to the cloud.

A separate process that runs inside a hospital. It receives objects from the hospital's
systems (DIMSE C-STORE, HL7 v2 over MLLP, a watched folder), keeps each one durably in a local
queue, and forwards it to the cloud only through the cloud's public doors (STOW-RS and the
HL7 report door, with the hospital's ``cfh_`` credential). It imports nothing of the cloud's
services, database or settings (an import-linter contract checks it).
"""
