"""The one exception type users see: a clear message, no traceback, non-zero exit."""


class DecodeLabError(Exception):
    """Bad input or an impossible request. The CLI prints `decodelab: <message>` and exits 2."""

    exit_code = 2
