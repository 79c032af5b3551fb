"""duplex's actors: the kernel, the agent, the chat and the faces that embed them.

A library logs and leaves the output to the program: the package logger gets a
`NullHandler`, so a program that set up no logging prints nothing (Python's last-resort
handler would print a bare "dead letter" on stderr); one that did set it up gets every
record, with its structured fields in `extra`.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
