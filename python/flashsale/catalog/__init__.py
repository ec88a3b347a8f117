"""Products, variants (SKUs), stock and sale windows."""
