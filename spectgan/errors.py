"""Errors that spectgan reports to people as a message, never as a traceback."""


class SpectganError(Exception):
    """A problem with the user's input or environment, with a message that says what is wrong and what is allowed."""


class InvalidImageError(SpectganError):
    """An image that spectgan cannot use (not an image, wrong dimension or pixel type, no brain in it)."""
