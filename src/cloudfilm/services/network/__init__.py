"""Network registries the protocol doors consult (DICOM peers)."""
