"""Wallet points: charges, balance and the ledger."""
