"""duplex's wire: the queue protocol, crypto, links, envelopes and chat messages (sans-io),
the queue client and, in `protocol.server`, the queue server.

The package logger gets a `NullHandler`: a program that set up no logging prints nothing
of ours; one that did gets every record.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
