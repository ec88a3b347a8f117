"""Popular products: a sliding-window top-k over paid orders, served by the C++ core
(docs/architecture.md#the-c-core)."""
