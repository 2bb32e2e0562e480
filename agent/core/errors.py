"""User-facing errors: the CLI prints their message (what was expected, what was found, what to do), never a traceback."""


def brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters: for wrapping library errors in ours."""
    text = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class VqaError(Exception):
    """Base for every error a user can cause and fix."""


class ConfigError(VqaError):
    """A flag, config file or environment setting is wrong."""


class ModelLoadError(VqaError):
    """Weights, tokenizer or processor could not be loaded from the given id or path."""


class ImageError(VqaError):
    """An image is missing, unreadable, outside the images root, or over the safety cap."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short machine-readable code: missing, corrupt, escapes_root, too_large, ...


class DataError(VqaError):
    """An input file (CSV) cannot be used as a whole."""


class InputError(VqaError):
    """A question, its options or its image cannot be used (the Python API's ``ask``)."""
