"""Booth for ComfyUI: registration only (importing it must stay cheap)."""

WEB_DIRECTORY = "./web"

# ComfyUI imports this folder as a package. A tool that imports this file on its own (pytest does,
# from a clone whose folder name is not a Python identifier) has no package to register from.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
