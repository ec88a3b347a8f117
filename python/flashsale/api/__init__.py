"""The HTTP layer: app factory, dependencies and error handlers."""
