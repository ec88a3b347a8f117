"""Popular products: a sliding-window top-k over paid orders (DESIGN §3, §5)."""
