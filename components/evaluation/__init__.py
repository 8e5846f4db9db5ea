"""The shared evaluate stage (:mod:`.stage`) and the picture helpers every family draws with (:mod:`.visualize`).

A family's own metrics live in its folder (``components/models/<family>/metrics.py``); this package
knows none of them.
"""
