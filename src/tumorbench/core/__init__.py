"""The project's shared vocabulary, imported by every other subpackage and importing none of them.

It owns the catalog (the paper's datasets, models, inits, tables and published numbers), params.yaml
(reading, checking, profiles), the variant names and the paths every stage reads and writes
(`variants`), the errors a user can fix, atomic file I/O and the parallel map. It imports only the
standard library and third-party packages.
"""
