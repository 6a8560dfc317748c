"""Model prices per million tokens, used to price charges server-side."""
