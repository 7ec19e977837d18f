"""The one error type every part of Sluice raises for bad input.

The command line turns a :class:`SluiceError` into one line on stderr and exit status 2.
"""


class SluiceError(Exception):
    """Bad input (file, field or parameter): the message names what is wrong."""


class RunFailed(Exception):
    """A run that started on valid input but failed (simulator, testbench or hardware): the
    command line prints the message and exits with status 1."""


def check_format(doc, expected: str, where, hint: str = "") -> None:
    """Refuse ``doc`` (a file's loaded JSON object or dictionary) unless its ``format`` field is
    ``expected``: one line naming ``where`` and the field, ``hint`` appended."""
    if not isinstance(doc, dict) or doc.get("format") != expected:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SluiceError(f"{where}: field 'format' is {got!r}, expected {expected!r}{hint}")
