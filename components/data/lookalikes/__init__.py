"""Look-alike data sets: tiny, seeded copies of public data sets' layouts, for tests and demos.

Each module writes folders that read like a public data set in one of the import formats
(:mod:`components.data.sources`), small enough that a one-epoch model trains in seconds, with
visible defects so that the model is not degenerate.
"""
