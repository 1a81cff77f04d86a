"""Error messages for people: TensorFlow's, shortened to what says what went wrong."""

import re


def brief(error, limit=400):
    """`error`'s first line without TensorFlow's `{{function_node ...}}` and `[Op:...]`
    decorations, as `Type: message`, at most `limit` characters."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text).strip()
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}"
