"""The one exception type for mistakes a user can fix; its message is printed as one line."""


class UserError(Exception):
    """A problem in the user's input or environment; the message says what to do."""
