"""Published checkpoints: a digest over every chain head, kept inside and outside the database."""
