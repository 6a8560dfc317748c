"""Ledger entries for readers: the filtered, paged listing in commit order."""
