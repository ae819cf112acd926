"""Watching a network work: live logs of executions, a node's event stream, network info.

* :class:`LogBuffer` / :class:`LogHub` - the bounded live output of executions,
  written by executors from any thread, read by any number of followers at their own
  pace (slow ones miss lines and are told so; the job never waits).
* :class:`EventHub` - a node's event stream (job events, peers joining and leaving).
* :class:`LogFrame` - one frame of the live log stream's ``format=batch`` (a read's
  lines in columns).
* :class:`NodeWatch` - ``node.watch``: both of the above for one node, plus serving its
  executions' output to the jobs' requesters over the transport.
"""

from .events import EventBatch, EventHub, NodeEvent
from .frames import LogFrame
from .logs import LogBatch, LogBuffer, LogHub, LogLine
from .node import LogChunkLive, LogRecord, NodeWatch

__all__ = [
    "EventBatch",
    "EventHub",
    "LogBatch",
    "LogBuffer",
    "LogChunkLive",
    "LogFrame",
    "LogHub",
    "LogLine",
    "LogRecord",
    "NodeEvent",
    "NodeWatch",
]
