"""Delegation in escrow: child agents and the grants they spend (issue 17)."""
