"""Transactional outbox: order events written with the change, relayed to the data platform."""
