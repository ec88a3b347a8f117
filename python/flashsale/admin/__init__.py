"""``/admin``: catalog and coupon management (admin role)."""
