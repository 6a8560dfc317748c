"""Reports: top spenders and spend over time, read from the rollups, exact to the nano-unit."""
