"""The staff audit log: who did what to which resource, with values before and after."""
