"""Agents: the spenders, each with its own credentials and budget."""
