"""Value tables and grids of the formats, each with its provenance (upstream file and commit)."""
