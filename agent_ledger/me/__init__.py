"""``/v1/me``: who the caller is, and for an agent its own record and budget."""
