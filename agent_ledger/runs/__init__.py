"""Runs: an agent's spend by task or session, and a cap per run (issue 17, item 2)."""
