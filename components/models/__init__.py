"""Model families of inspectops, one folder each (see :mod:`components.models.family`).

Nothing is imported here: a family's interface must be importable without torch, so that stages
that only read files (register) start in a second.
"""
