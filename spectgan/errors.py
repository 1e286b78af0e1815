"""Errors that spectgan reports to people as a message, never as a traceback: one class per kind, raised by the service
and by the client alike (the client raises the kind of error the server answered)."""


class SpectganError(Exception):
    """A problem with the user's input or environment, with a message that says what is wrong and what is allowed."""


class InvalidImageError(SpectganError):
    """An image that spectgan cannot use (not an image, wrong dimension or pixel type, no brain in it)."""


class InvalidRequestError(SpectganError):
    """A request that breaks a rule of the service (a value out of range, an impossible condition, a file type that is
    not accepted); the message names what is allowed."""


class MalformedRequestError(InvalidRequestError):
    """A request that cannot be read at all (params that are not a JSON object)."""


class TooLargeError(InvalidRequestError):
    """An upload over the server's size limit."""


class NotFoundError(SpectganError):
    """A request that names something the service does not have (a model, an image id); the message lists what it
    has."""


class UnavailableError(SpectganError):
    """The service cannot answer now (a model without a usable bundle, a generation worker that died)."""


class AuthenticationError(SpectganError):
    """A request without the service's API token, or with another token; the message never shows a token."""
