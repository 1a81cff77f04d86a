"""Name look-ups that fail helpfully."""

import difflib
import inspect


def unknown_name(what, argument, name, known):
    """The error for `name` not among `known`: names the argument, echoes the value,
    suggests the closest known name and lists them all."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown {what} `{argument}`. Received: {argument}={name!r}.{hint} "
                      f"Known: {known}")


def check_arguments(what, name, function, kwargs):
    """Refuses keyword arguments that `function` (a builder, a class) does not take,
    naming them and listing the ones it takes, instead of Python's TypeError."""
    parameters = inspect.signature(function).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"{what} {name!r} has no argument {', '.join(map(repr, unknown))}. "
                         f"Its arguments: {sorted(parameters)}")
