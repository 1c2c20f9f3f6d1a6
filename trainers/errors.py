"""The one exception type users see: a problem they can fix themselves."""


class BoothError(Exception):
    """Bad input or settings. The message names the file or setting and says what to do.

    Raised instead of letting a deep torch/PIL/safetensors error escape, so the CLI and the
    ComfyUI nodes can show it as-is without a stack trace.
    """


def describe_os_error(error: OSError) -> str:
    """The last line of defence for a file problem no check caught (the CLI's and the nodes'):
    name the file and the fix, in one line instead of an errno dump."""
    where = f"{error.filename}: " if error.filename else ""
    what = str(error.strerror or error).rstrip(".")
    return (f"{where}{what}. Check that the path exists, is the right kind (file or folder), can be read and "
            "written by you, and that the disk has space.")
