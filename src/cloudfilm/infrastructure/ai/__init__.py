"""AI assistance, the pure part: the plug-in contract and loader, the sample lung-nodule
detector and the DICOM result builder (highdicom). No database, storage or settings: the
service (services/ai) hands plug-ins data sets and stores what comes back."""
