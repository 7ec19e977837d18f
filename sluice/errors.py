"""The one error type every part of Sluice raises for bad input.

The command line turns a :class:`SluiceError` into one line on stderr and exit status 2.
"""


class SluiceError(Exception):
    """Bad input (file, field or parameter): the message names what is wrong."""


class RunFailed(Exception):
    """A run that started on valid input but failed (simulator, testbench or hardware): the
    command line prints the message and exits with status 1."""
