"""Finding photos on disk and reading them: walk, fingerprint, EXIF, decode."""
