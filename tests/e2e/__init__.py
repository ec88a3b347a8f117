"""End-to-end tests: real `flashsale serve` processes driven over HTTP."""
