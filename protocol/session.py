"""The backend's session: setup (§3.2-§3.5), job messages (§1.5), abort, end of job (§3.6).

The mode-specific parts live in `backup`, `query` and `restore`; this module owns the
connection, the session state and the rules that hold everywhere: `T` means "drain stdin
to EOF, then stop" (§2.4, §10.8), EOF means `EndOfStream`, and after `A` nothing but
draining is allowed (§4.10).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from .backup import ItemStream
from .errors import EndOfStream, HandshakeError, SessionAborted, UnexpectedPacket
from .framing import Connection, Packet, PacketBatch
from .jobinfo import EndReason, JobInfo, Mode, parse_job_lines, split_line
from .query import QueryStream
from .restore import RestoreHandler, RestoreLoop
from .text import encode_command, encode_message, encode_message_with_note, scrub_secrets

log = logging.getLogger("protocol")

_HELLO_REPLY = b"Hello Bacula\n"


class BackendSession:
    """Backend side of one metaplugin session over a `Connection`.

    Protocol calls (`handshake` ... `wait_for_end`) belong to one thread; the message
    methods (`info`, `warning`, `error`, `message`, `abort`) may be called from any thread.
    """

    def __init__(
        self,
        conn: Connection,
        plugin_name: str,
        plugin_api: str,
        *,
        mismatch_hint: str = "",
        abort_note: str = "",
    ) -> None:
        """`plugin_api` is the Hello's second word. It may be `<api>/<release>` (the plugin
        and the backend of one release): a plugin of another release is then refused with
        both releases named, and `mismatch_hint` (what to do) appended.

        `abort_note` is appended (after one space) to the text of every `A`: the FD always
        follows an `A`'s Fatal line with its own Fatal "PTCOMM cannot get packet header from
        backend." (ptcomm.cpp handle_read_header, whatever the packets around it), and the
        note can tell the reader that line is a consequence."""
        self.conn = conn
        self.plugin_name = plugin_name
        self.plugin_api = plugin_api
        self.mismatch_hint = mismatch_hint
        self.abort_note = abort_note
        #: Set (from a relay thread) when SIGUSR1/SIGTERM arrives (§2.5).
        self.cancelled = threading.Event()
        #: The signal number that cancelled the session, set inside the handler itself.
        self.cancel_signal: int | None = None
        self.aborted = False
        self.job: JobInfo | None = None
        self.params: list[tuple[str, str]] | None = None
        self.mode: Mode | None = None
        #: (file name, exception) for every restore-handler failure reported to the FD.
        self.restore_failures: list[tuple[str, BaseException]] = []
        self._finish_answered = False
        self._signal_pipe: tuple[int, int] | None = None
        self._old_handlers: dict[int, signal.Handlers | int | object | None] = {}

    # ------------------------------------------------------------------ low level

    def read_packet(self) -> Packet:
        """Read one FD packet. `T` drains stdin to EOF and raises `EndOfStream` (§2.4)."""
        pkt = self.conn.read_packet()
        if pkt.status == "T":
            self.drain()
            raise EndOfStream("T received from the FD")
        return pkt

    def read_command(self, expected: str) -> str:
        """Read a packet that must be a C command; `expected` names it for the error."""
        pkt = self.read_packet()
        if pkt.status != "C":
            raise UnexpectedPacket(f"expected {expected}, got {pkt.describe()}")
        return pkt.text

    def read_lines_until_eod(self, block: str) -> list[str]:
        """Read the C lines of a Job/Params/FNAME block up to its F (§3.3, §3.4, §6.3)."""
        lines: list[str] = []
        while True:
            pkt = self.read_packet()
            if pkt.status == "F":
                return lines
            if pkt.status != "C":
                raise UnexpectedPacket(f"expected C line or F in {block}, got {pkt.describe()}")
            lines.append(pkt.text)

    def send_batch(self, batch: PacketBatch) -> None:
        """Send protocol packets; refused after `abort` (§4.10: the FD stopped reading)."""
        if self.aborted:
            raise SessionAborted("session aborted: only draining is allowed")
        self.conn.send_batch(batch)

    def send_eod(self) -> None:
        self.send_batch(PacketBatch().add("F"))

    def send_command(self, text: str) -> None:
        self.send_batch(PacketBatch().add("C", encode_command(text)))

    def drain(self) -> None:
        """Discard stdin until EOF (§10.8: never exit before EOF after T)."""
        buf = memoryview(bytearray(65536))
        while self.conn.raw_reader.readinto(buf):
            pass

    # ------------------------------------------------------------------ setup

    def handshake(self) -> None:
        """§3.2: check `Hello <name> <api>`, answer `Hello Bacula`; mismatch → `A` + raise."""
        text = self.read_command(f"C 'Hello {self.plugin_name} {self.plugin_api}'")
        words = text.split(" ")
        if len(words) != 3 or words[0] != "Hello":
            expected = f"Hello {self.plugin_name} {self.plugin_api}"
            reason = f"bad handshake {scrub_secrets(text)!r}, expected {expected!r}"
            self.abort(reason)
            raise HandshakeError(reason)
        if (words[1], words[2]) != (self.plugin_name, self.plugin_api):
            reason = self._mismatch(words[1], scrub_secrets(words[2]))
            self.abort(reason)
            raise HandshakeError(reason)
        self.send_batch(PacketBatch().add("C", _HELLO_REPLY))

    def _mismatch(self, name: str, api: str) -> str:
        ours, _, our_release = self.plugin_api.partition("/")
        theirs, _, their_release = api.partition("/")
        if name == self.plugin_name and theirs == ours and our_release:
            reason = (
                f"the FD plugin {name} is release {their_release or '(none: older than the release check)'}, "
                f"this backend is release {our_release}: both must come from the same release"
            )
        else:
            reason = (
                f"backend is {self.plugin_name} API {self.plugin_api}, but the FD plugin is {name} API {api}"
            )
        return f"{reason}; {self.mismatch_hint}" if self.mismatch_hint else reason

    def read_job(self) -> JobInfo:
        """§3.3: `Job`, key=value lines, F → reply F."""
        text = self.read_command("C 'Job'")
        if text != "Job":
            raise UnexpectedPacket(f"expected C 'Job', got C {scrub_secrets(text)!r}")
        self.job = parse_job_lines(self.read_lines_until_eod("Job block"))
        self.send_eod()
        return self.job

    def read_params(self) -> list[tuple[str, str]]:
        """§3.4: `Params`, key=value lines (order and duplicates kept), F → reply F."""
        text = self.read_command("C 'Params'")
        if text != "Params":
            raise UnexpectedPacket(f"expected C 'Params', got C {scrub_secrets(text)!r}")
        self.params = [split_line(line) for line in self.read_lines_until_eod("Params block")]
        self.send_eod()
        return self.params

    def read_start(self, *, ack: bool = True) -> Mode:
        """§3.5: read `<Mode>Start`; with `ack` reply F at once, else call `ack_start` later."""
        text = self.read_command("C '<Mode>Start'")
        try:
            self.mode = Mode(text)
        except ValueError:
            known = ", ".join(m.value for m in Mode)
            raise UnexpectedPacket(
                f"unknown start command {scrub_secrets(text)!r}, expected one of {known}"
            ) from None  # the ValueError holds the text unscrubbed; the message, scrubbed
        if ack:
            self.ack_start()
        return self.mode

    def ack_start(self, strip: int | None = None) -> None:
        """Acknowledge the start command; `strip` sends `STRIP:<n>` first (§3.5, §4.8.5)."""
        batch = PacketBatch()
        if strip is not None and self.mode is not Mode.RESTORE:
            batch.add("C", encode_command(f"STRIP:{strip}"))
        self.send_batch(batch.add("F"))

    # ------------------------------------------------------------------ messages

    def message(self, status: str, text: str) -> bool:
        """Send a job message (§1.5). Never raises for a vanished FD; returns False if the
        message could not be sent (FD gone, or session aborted)."""
        if self.aborted:
            return False
        try:
            self.conn.send(status, encode_message(text))
        except (EndOfStream, OSError):
            return False
        return True

    def info(self, text: str) -> bool:
        """`I`: M_INFO, also the keep-alive for long silent work (§1.9)."""
        return self.message("I", text)

    def warning(self, text: str) -> bool:
        """`W`: M_WARNING (§1.5). Prefer it in restores: `Q` fails a restore (§6.7)."""
        return self.message("W", text)

    def error(self, text: str) -> bool:
        """`Q`: non-fatal M_ERROR that leaves the protocol state untouched (§1.4, §4.10)."""
        return self.message("Q", text)

    def error_packet(self, text: str) -> None:
        """`E`: NOT just a message, it fails the FD's current read (§1.4, §10.16)."""
        self.send_batch(PacketBatch().add("E", encode_message(text)))

    def abort(self, text: str) -> None:
        """`A`: Fatal; the FD stops reading this backend (§4.10). Idempotent, never raises
        for a vanished FD. Afterwards call `wait_for_end` (it drains) and exit 0.

        The text is sent with `abort_note` appended; the FD then logs its own Fatal "PTCOMM
        cannot get packet header from backend." in every case (§1.4)."""
        with self.conn.writer.lock:
            if self.aborted:
                return
            self.aborted = True
        with contextlib.suppress(EndOfStream, OSError):
            self.conn.send("A", encode_message_with_note(text, self.abort_note))

    # ------------------------------------------------------------------ modes

    def item_stream(self) -> ItemStream:
        """Backup/estimate/listing producer; a data phase exists only in BACKUP (§5.1)."""
        if self.mode not in (Mode.BACKUP, Mode.ESTIMATE, Mode.LISTING):
            raise RuntimeError(f"item_stream() needs BACKUP/ESTIMATE/LISTING, mode is {self.mode}")
        return ItemStream(self, data_phase=self.mode.has_data_phase)

    def query_stream(self) -> QueryStream:
        """Producer for a `.query` answer (§5.3)."""
        if self.mode is not Mode.QUERY:
            raise RuntimeError(f"query_stream() needs QUERY, mode is {self.mode}")
        return QueryStream(self)

    def run_restore(self, handler: RestoreHandler) -> None:
        """Dispatch restore commands to `handler` until FINISH, which is answered (§6)."""
        if self.mode is not Mode.RESTORE:
            raise RuntimeError(f"run_restore() needs RESTORE, mode is {self.mode}")
        RestoreLoop(self, handler).run()
        self._finish_answered = True

    # ------------------------------------------------------------------ end

    def _reply_eod_quietly(self) -> None:
        with contextlib.suppress(EndOfStream):
            self.conn.send("F")

    def wait_for_end(self, on_end: Callable[[], None] | None = None) -> EndReason:
        """§3.6, §2.4: answer FINISH and END with F, drain after T, return why it ended.

        Works after `abort` too (§4.10: FINISH may still arrive; anything else is read and
        dropped until EOF). Otherwise anything but END, FINISH or T raises `UnexpectedPacket`.
        `on_end` runs when END arrives, before it is answered: the job has been confirmed
        (§3.6: its status is already with the Director, so nothing done here can fail it);
        messages it sends still reach the job log (§1.5).
        """
        got_end = False
        while True:
            try:
                pkt = self.conn.read_packet()
            except EndOfStream:
                return EndReason.END if got_end else EndReason.EOF
            if pkt.status == "T":
                self.drain()
                return EndReason.END if got_end else EndReason.TERMINATE
            text = pkt.text if pkt.status == "C" else None
            if text == "FINISH":
                self._finish_answered = True
                self._reply_eod_quietly()
            elif text == "END":
                got_end = True
                if on_end is not None:
                    # Before the F: messages sent now still reach the job log (§1.5).
                    on_end()
                    on_end = None
                self._reply_eod_quietly()
            elif not self.aborted:
                raise UnexpectedPacket(f"expected END, FINISH or T, got {pkt.describe()}")
            else:
                log.debug("after abort, dropped %s", pkt.describe())

    # ------------------------------------------------------------------ signals

    def install_signal_handlers(self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        """§2.5: SIGUSR1 (and SIGTERM) set `cancelled` instead of killing the process.

        The handler only records the signal and writes one byte to a pipe; a daemon relay
        thread sets the Event. Calling `Event.set()` inside the handler could deadlock if
        the main thread was interrupted inside that Event's own lock. Main thread only.
        """
        if self._signal_pipe is None:
            rfd, wfd = os.pipe()
            os.set_blocking(wfd, False)
            self._signal_pipe = (rfd, wfd)
            threading.Thread(
                target=self._relay_signals, args=(rfd,), name="protocol-signals", daemon=True
            ).start()
        wfd = self._signal_pipe[1]

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.cancel_signal = signum
            with contextlib.suppress(OSError):
                os.write(wfd, b"!")

        for signum in signals:
            self._old_handlers.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, on_signal)

    def restore_signal_handlers(self) -> None:
        """Undo `install_signal_handlers` (used by tests)."""
        for signum, old in self._old_handlers.items():
            signal.signal(signum, old if callable(old) or isinstance(old, int) else signal.SIG_DFL)
        self._old_handlers.clear()
        if self._signal_pipe is not None:
            os.close(self._signal_pipe[1])  # the relay thread sees EOF and exits
            self._signal_pipe = None

    def _relay_signals(self, rfd: int) -> None:
        try:
            while os.read(rfd, 64):
                self.cancelled.set()
        finally:
            os.close(rfd)
