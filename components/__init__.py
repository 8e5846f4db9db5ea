"""inspectops components: the work behind every pipeline stage (flows only wire them)."""

__version__ = "0.1.0"
