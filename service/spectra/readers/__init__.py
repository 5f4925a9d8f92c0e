"""Reader modules, imported by name so that each registers itself exactly once."""
