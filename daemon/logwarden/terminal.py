"""What log content may look like on a terminal: every control character as a visible escape.

A log line is attacker-controlled input. Printed raw, an ESC or a C1 control could move the
cursor, recolour the screen, retitle the window or, on some terminals, answer back into the input
(DESIGN: foreground output never passes control characters from log content to a terminal raw).
"""

from __future__ import annotations

# C0 controls, DEL and C1 controls (U+0080-U+009F, which some terminals read as 8-bit ESC sequences)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def visible(text: str) -> str:
    """`text` with each control character written as `\\xNN`: safe to print to a terminal."""
    return text.translate(_CONTROLS)
