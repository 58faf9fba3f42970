"""Errors that are the user's to fix: the CLI prints them as one message, no traceback."""


class UserError(Exception):
    """Bad input (a missing file, a wrong format, a refused checkpoint).

    The CLI prints ``error: <message>`` and exits with status 2. Library callers can catch it
    to tell a user mistake from a bug.
    """
