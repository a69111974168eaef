"""The one exception type for mistakes a user can fix (a bad file, a wrong key, a mismatched checkpoint).

The CLI prints its message without a traceback and exits with status 2; everything else is a bug
and keeps its traceback.
"""


class FlightMindError(Exception):
    """A user-facing error whose message names the file, line or key and says what to do."""
