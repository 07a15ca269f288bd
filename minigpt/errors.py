"""The one exception type meant for users: the CLI prints it as one line and exits 2."""


class MiniGPTError(Exception):
    """A problem with the user's input (arguments, files, data) that they can fix.

    The message names the problem and the fix in one line; anything else raised is a bug.
    """
