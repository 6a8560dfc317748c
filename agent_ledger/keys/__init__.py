"""API keys: issued per agent or per staff member, shown once, stored only as hashes."""
