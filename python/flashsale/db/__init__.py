"""Persistence: ORM models, engines and the request transaction."""
