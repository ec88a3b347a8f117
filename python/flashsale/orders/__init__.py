"""Orders and payment: several lines, one coupon, paid from the wallet, never oversold."""
