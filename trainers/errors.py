"""The one exception type users see: a problem they can fix themselves."""


class BoothError(Exception):
    """Bad input or settings. The message names the file or setting and says what to do.

    Raised instead of letting a deep torch/PIL/safetensors error escape, so the CLI and the
    ComfyUI nodes can show it as-is without a stack trace.
    """
