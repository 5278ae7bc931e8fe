"""The one exception type the CLI turns into a one-line message and exit code 2."""


class SvdtoolError(Exception):
    """A user-facing error: bad input, missing files, unreachable Hub. The message is one actionable line."""

    exit_code = 2
