"""Name look-ups that fail helpfully."""

import difflib


def unknown_name(what, argument, name, known):
    """The error for `name` not among `known`: names the argument, echoes the value,
    suggests the closest known name and lists them all."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown {what} `{argument}`. Received: {argument}={name!r}.{hint} "
                      f"Known: {known}")
