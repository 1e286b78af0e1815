"""Export: DICOM encoding (NM, SEG, SR) and sending to a PACS (C-STORE, STOW-RS; Orthanc for tests and demo)."""
