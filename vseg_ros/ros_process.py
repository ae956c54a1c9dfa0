"""What every vseg executable needs from its process: the ``--ros-args`` tail split off the command
line, and SIGINT/SIGTERM turned into one stop request that never raises.

launch_ros appends ``--ros-args -r __node:=NAME [-r __ns:=NS] [--params-file F] [-r from:=to]`` to
every executable it starts; argparse must not see that part, rcl must. Importing this module imports
no ROS package, so the `vseg` command stays usable where rclpy is missing.

Signals: Ctrl-C in a terminal reaches the whole process group, and launch then sends its own SIGINT
(later SIGTERM) to each child while it is still cleaning up. rclpy's handler raises
``KeyboardInterrupt`` wherever the main thread happens to be, destroy_node included; a handler that
only sets a flag (one that takes no lock: :class:`StopRequest`) lets the clean-up run to its end however
many signals follow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
from collections.abc import Sequence

__all__ = [
    "LOCAL_LARGE_IMAGE_TRANSPORTS",
    "ROS_ARGS",
    "StopRequest",
    "ignore_stop_signals",
    "install_stop_handlers",
    "split_ros_args",
    "use_local_large_image_transports",
]

ROS_ARGS = "--ros-args"
_END_OF_ROS_ARGS = "--"

# Fast DDS on shared memory alone, with segments that hold a whole HD frame. The default 512 KB
# segments fragment a 2.7 MB 1280x720 frame and most best-effort samples get lost (37 of 150 at 30 Hz
# between two processes here; 150 of 150 with this setting, matched in 0.1 s). LARGE_DATA carries them
# too, but its TCP transport could block forever in a participant's destructor (a dds.tcp thread
# polling a channel without timeout), and its discovery took 3 s and sometimes never matched on a
# loaded machine. No sockets: only processes on this host with the same setting see each other.
LOCAL_LARGE_IMAGE_TRANSPORTS = "SHM?max_msg_size=4MB&sockets_size=16MB"


def use_local_large_image_transports() -> None:
    """Give this process, and the processes it starts, :data:`LOCAL_LARGE_IMAGE_TRANSPORTS` unless the
    environment already names Fast DDS transports (a user's own setting wins). Call it before the
    first DDS participant is created: every process of a graph must share the setting."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", LOCAL_LARGE_IMAGE_TRANSPORTS)


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the program's own arguments, the ROS arguments) of ``argv`` (without the program name).

    As rcl reads a command line: every ``--ros-args`` opens a ROS section that runs to the next
    ``--`` or to the end; several sections are allowed. The ROS list keeps the ``--ros-args`` markers
    (it is what ``rclpy.init(args=[program, *ros])`` takes) and drops the closing ``--``.
    """
    own: list[str] = []
    ros: list[str] = []
    in_ros = False
    for arg in argv:
        if arg == ROS_ARGS:
            in_ros = True
            ros.append(arg)
        elif in_ros and arg == _END_OF_ROS_ARGS:
            in_ros = False
        elif in_ros:
            ros.append(arg)
        else:
            own.append(arg)
    return own, ros


class StopRequest:
    """A stop flag that a signal handler can set: ``set``, ``is_set`` and ``wait`` as ``threading.Event``,
    without a lock anywhere.

    ``threading.Event.set`` takes the event's lock. A Python signal handler runs in the main thread
    between two bytecodes, also while that thread holds this lock: inside ``Event.wait``, or inside an
    earlier handler's ``set`` when the next signal of a burst arrives. It then waits for itself forever
    and no later signal can end the process (reproduced with bursts of SIGINT and SIGTERM: ``py-spy dump``
    showed the handler nested in itself, waiting in ``Condition.__enter__``). Here ``set``
    writes a byte to a non-blocking pipe and ``wait`` selects on it, so a signal also ends a ``wait``
    at once.
    """

    def __init__(self) -> None:
        self._requested = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self._requested = True
        with contextlib.suppress(BlockingIOError):  # a full pipe holds wake-ups enough: ``wait`` returns
            os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stop is requested or ``timeout`` seconds pass (None: no limit); whether it is."""
        if not self._requested:
            # A signal interrupts select; Python runs the handler, which writes to the pipe, and the
            # retried select (PEP 475) returns at once.
            select.select([self._read], [], [], timeout)
        return self._requested

    def close(self) -> None:
        """Release the pipe, for a request made for one run rather than for the process."""
        os.close(self._read)
        os.close(self._write)


@functools.cache  # once per process: later calls return the same request
def install_stop_handlers() -> StopRequest:
    """Make SIGINT and SIGTERM set the returned stop request (and nothing else) for the rest of the
    process.

    Pair it with ``rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)``, and wait or
    spin in slices that look at the request; the process then ends through its normal clean-up with
    exit status 0, however many signals arrive while it cleans up. Calling it again returns the same
    request, so an executable can install the handlers before its slow imports (a signal then is not
    lost) and its ``main`` can still call it.
    """
    stop = StopRequest()

    def on_signal(signum, frame) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    return stop


def ignore_stop_signals() -> None:
    """From now on SIGINT and SIGTERM do nothing: for a process whose own clean-up is done.

    Interpreter finalisation puts back the default action (terminate) of every signal that had a
    Python handler, but leaves ignored ones ignored; DDS's teardown runs during that finalisation, and
    launch's second SIGINT or its SIGTERM arriving then would end the process with -2 or -15 where
    it was about to exit with 0.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
