"""Diagnostic reports as senders deliver them (FHIR R4 DiagnosticReport, DICOM SR, DICOM
Encapsulated PDF, HL7 v2 ORU^R01), read into one :class:`ReportDocument`; their rendering
(HTML, PDF) and their search tokens. Pure: no database, no HTTP."""
