"""Errors a user can fix. The CLI prints their message (no traceback) and exits with code 2."""


class UserError(Exception):
    """Bad input or environment: the message names the problem and the fix."""
