"""Budgets: limits per agent and per team, and their live status."""
