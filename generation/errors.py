"""The error every service raises for a request the data does not allow."""


class ServiceError(ValueError):
    """A request the data does not allow; the message is meant for the person who asked."""
