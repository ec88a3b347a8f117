"""The shopping cart (DESIGN §5 "Cart")."""
