"""First-come coupons: limited quantity, at most one per user."""
