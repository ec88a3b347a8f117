"""Sign-up, tokens (JWT bearer) and the admin role."""
