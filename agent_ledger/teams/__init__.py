"""Teams: groups of agents that can share a budget."""
