"""``/docs``: the interactive API documentation, served with its own assets so it works offline."""
