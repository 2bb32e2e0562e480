"""An offline bundle (``vqa bundle``): the project's wheels and its dependencies' for a target Python and platform,
the configured model snapshots, OCR data and a font, with a checked manifest and the files that install it."""
