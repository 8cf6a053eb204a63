"""The one exception type for problems a user can fix."""


class UserError(Exception):
    """Bad input or environment the user can correct.

    The message is one line that names the problem and the fix; entry points
    print it without a traceback and exit with status 2.
    """

    exit_code = 2
