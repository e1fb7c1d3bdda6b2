"""Exception and warning types that the command-line tools turn into one line."""


class PspnetError(Exception):
    """Base class for every failure a user can cause (bad path, file, flag).

    Args:
        message: what went wrong, naming arguments as the Python API takes them.
        flags: how the command line says those arguments, e.g.
            ``{"overwrite=True": "--overwrite"}`` (see ``command_line_message``).
    """

    def __init__(self, *args, flags: dict[str, str] | None = None):
        super().__init__(*args)
        self.flags = dict(flags or {})

    def command_line_message(self) -> str:
        """The message as a command-line tool prints it: flags for Python arguments."""
        text = str(self)
        for argument, flag in self.flags.items():
            text = text.replace(argument, flag)
        return text


class DataError(PspnetError, ValueError):
    """A data folder or image file is missing, unreadable or malformed."""


class ConfigError(PspnetError, ValueError):
    """A configuration value or command-line flag is invalid."""


class PspnetWarning(UserWarning):
    """A recoverable problem with the input (skipped files, odd label colours)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
