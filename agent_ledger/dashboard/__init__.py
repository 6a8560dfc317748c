"""The dashboard: server-rendered pages for staff under /dashboard (see controller.py)."""
