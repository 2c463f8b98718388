"""Setup (§3.2-§3.5), text rules (§1.5, §1.7), end of job (§3.6) and signals (§2.5)."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devkit.fdpeer import FDPeer
from protocol import (
    BackendSession,
    Connection,
    EndOfStream,
    EndReason,
    HandshakeError,
    Mode,
    ProtocolError,
    SessionAborted,
    UnexpectedPacket,
    last_wins,
)
from protocol.framing import PacketBatch
from protocol.text import MAX_MESSAGE_BYTES, decode_text, encode_message, encode_text

HELLO = b"C000017\nHello metatest 1\n"


def c(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b"C%06d\n" % len(raw) + raw


def block(head: str, lines: list[str]) -> bytes:
    return c(head + "\n") + b"".join(c(line + "\n") for line in lines) + b"F000000\n"


def session(data: bytes) -> tuple[BackendSession, Connection]:
    conn = Connection.in_memory(data)
    return BackendSession(conn, "metatest", "1"), conn


def test_handshake_mismatch_sends_abort() -> None:
    s, conn = session(c("Hello kubernetes 3\n"))
    with pytest.raises(HandshakeError, match="kubernetes API 3"):
        s.handshake()
    assert conn.output.startswith(b"A") and b"kubernetes" in conn.output
    assert s.aborted
    with pytest.raises(SessionAborted):
        s.send_eod()


@pytest.mark.parametrize(
    ("theirs", "named"),
    [("1/0.2.0", "release 0.2.0"), ("1", "release (none: older than the release check)")],
)
def test_a_plugin_of_another_release_is_refused_naming_both(theirs: str, named: str) -> None:
    conn = Connection.in_memory(c(f"Hello ec2 {theirs}\n"))
    s = BackendSession(conn, "ec2", "1/0.1.0", mismatch_hint="install both from one release")
    with pytest.raises(HandshakeError) as caught:
        s.handshake()
    text = (
        f"the FD plugin ec2 is {named}, this backend is release 0.1.0: both must come from the "
        "same release; install both from one release"
    )
    assert str(caught.value) == text
    assert conn.output == b"A%06d\n" % (len(text) + 1) + text.encode() + b"\n"


def test_the_same_release_is_welcome() -> None:
    conn = Connection.in_memory(c("Hello ec2 1/0.1.0\n"))
    BackendSession(conn, "ec2", "1/0.1.0").handshake()
    assert conn.output == b"C000013\nHello Bacula\n"


def test_handshake_wrong_packet() -> None:
    s, _ = session(b"D000003\nabc")
    with pytest.raises(UnexpectedPacket, match="expected C 'Hello metatest 1', got D"):
        s.handshake()


def test_job_block_parsing_restore() -> None:
    lines = [
        "Name=r.1",
        "JobID=21",
        "Type=R",
        "Where=",
        "Replace=a",
        "PrevJobName=",
        "WorkingDir=/w",
        "SysconfigPath=/etc/b/",
        "ExePath=/sbin/",
        "Future=x=y",
        "Odd",
    ]
    s, conn = session(HELLO + block("Job", lines))
    s.handshake()
    job = s.read_job()
    assert (job.name, job.jobid, job.type, job.level, job.since) == ("r.1", 21, "R", None, None)
    assert job.where == "" and job.regex_where is None and job.replace == "a"
    assert job.prev_job_name == "" and job.namespace is None
    assert (job.working_dir, job.sysconfig_path, job.exe_path) == ("/w", "/etc/b/", "/sbin/")
    assert job.extra == {"Future": "x=y", "Odd": ""}
    assert conn.output == b"C000013\nHello Bacula\nF000000\n"


def test_job_block_incremental() -> None:
    s, _ = session(block("Job", ["Name=n", "JobID=3", "Type=B", "Level=I", "Since=1795708904"]))
    job = s.read_job()
    assert (job.level, job.since) == ("I", 1795708904)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (c("Jobs\n"), "expected C 'Job', got C 'Jobs'"),
        (c("Job\n") + b"D000003\nabc", "expected C line or F in Job block, got D"),
        (block("Job", ["Type=X"]), "Type='X'"),
        (block("Job", ["Type=B", "JobID=x"]), "JobID='x' is not an integer"),
        (block("Params", []), "expected C 'Job', got C 'Params'"),
    ],
)
def test_job_block_errors(data: bytes, message: str) -> None:
    s, _ = session(data)
    with pytest.raises(ProtocolError, match=message):
        s.read_job()


_KEY = st.text(st.characters(blacklist_characters="=\n\x00", codec="utf-8"), max_size=20)
_VALUE = st.text(st.characters(blacklist_characters="\n\x00", codec="utf-8"), max_size=40)


@given(st.lists(st.tuples(_KEY, _VALUE), max_size=12))
def test_params_round_trip(params: list[tuple[str, str]]) -> None:
    lines = [f"{k}={v}" for k, v in params]
    s, conn = session(block("Params", lines))
    assert s.read_params() == params
    assert conn.output == b"F000000\n"


def test_params_duplicates_and_missing_equals() -> None:
    s, _ = session(block("Params", ["dest=/a", "verbose", "dest=/b", "Accurate=1", "k="]))
    params = s.read_params()
    assert params == [("dest", "/a"), ("verbose", ""), ("dest", "/b"), ("Accurate", "1"), ("k", "")]
    assert last_wins(params)["dest"] == "/b"


@pytest.mark.parametrize("mode", list(Mode))
def test_start_modes(mode: Mode) -> None:
    s, conn = session(c(mode.value + "\n"))
    assert s.read_start() is mode
    assert conn.output == b"F000000\n"


def test_start_unknown_and_strip() -> None:
    s, _ = session(c("FooStart\n"))
    with pytest.raises(UnexpectedPacket, match="unknown start command 'FooStart'"):
        s.read_start()
    s, conn = session(c("BackupStart\n"))
    s.read_start(ack=False)
    s.info("preparing")
    s.ack_start(strip=2)
    assert conn.output == c("preparing\n").replace(b"C", b"I", 1) + c("STRIP:2\n") + b"F000000\n"


@given(st.binary(max_size=200))
def test_decode_text_any_bytes(raw: bytes) -> None:
    text = decode_text(raw)
    assert encode_text(text) == (raw[:-1] if raw.endswith(b"\n") else raw)


@given(st.text(max_size=3000))
def test_encode_message_rules(text: str) -> None:
    raw = encode_message(text)
    assert raw.endswith(b"\n") and 2 <= len(raw) <= MAX_MESSAGE_BYTES
    assert b"\x00" not in raw
    raw.decode("utf-8")  # always valid UTF-8


def test_message_placeholder_and_truncation() -> None:
    assert encode_message("") == encode_message("\n") == b"(no message text)\n"
    assert encode_message("x\n") == b"x\n"
    long = encode_message("é" * 5000)
    assert len(long) <= MAX_MESSAGE_BYTES and long.endswith(b"...\n")


def test_messages_after_abort_are_dropped() -> None:
    s, conn = session(b"")
    assert s.warning("w")
    s.abort("fatal")
    s.abort("again")
    assert not s.info("late")
    assert conn.output == b"W000002\nw\nA000006\nfatal\n"


def test_messages_never_raise_for_a_vanished_fd() -> None:
    r, w = os.pipe()
    os.close(r)
    s = BackendSession(Connection.from_fds(r, w), "metatest", "1")
    assert s.info("x") is False
    s.abort("gone")  # no exception
    os.close(w)


@pytest.mark.parametrize(
    ("data", "reason", "out"),
    [
        (c("END\n") + b"T000000\n" + b"junk after T", EndReason.END, b"F000000\n"),
        (c("FINISH\n") + c("END\n") + b"T000000\n", EndReason.END, b"F000000\n" * 2),
        (b"T000000\n", EndReason.TERMINATE, b""),
        (b"", EndReason.EOF, b""),
        (c("FINISH\n"), EndReason.EOF, b"F000000\n"),
        (c("END\n"), EndReason.END, b"F000000\n"),
    ],
)
def test_wait_for_end(data: bytes, reason: EndReason, out: bytes) -> None:
    s, conn = session(data)
    assert s.wait_for_end() is reason
    assert conn.output == out


def test_wait_for_end_unexpected() -> None:
    s, _ = session(c("BOGUS\n"))
    with pytest.raises(UnexpectedPacket, match="expected END, FINISH or T, got C 'BOGUS'"):
        s.wait_for_end()


def test_t_anywhere_drains_then_end_of_stream() -> None:
    s, _ = session(b"T000000\n" + b"anything at all")
    with pytest.raises(EndOfStream, match="T received"):
        s.handshake()


def test_eof_anywhere_is_end_of_stream() -> None:
    for data in (b"", HELLO, HELLO + c("Job\n")):
        s, _ = session(data)
        with pytest.raises(EndOfStream):
            s.handshake()
            s.read_job()


def test_sigusr1_and_sigterm_set_cancelled() -> None:
    s, _ = session(b"")
    s.install_signal_handlers()
    try:
        assert not s.cancelled.is_set()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert s.cancelled.wait(5)
        assert s.cancel_signal == signal.SIGUSR1
        s.cancelled.clear()
        os.kill(os.getpid(), signal.SIGTERM)
        assert s.cancelled.wait(5) and s.cancel_signal == signal.SIGTERM
    finally:
        s.restore_signal_handlers()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_message_storm_from_threads_never_interleaves() -> None:
    """Worker threads send messages while the main thread streams big data packets."""
    r, w = os.pipe()
    pr, pw = os.pipe()
    s = BackendSession(Connection.from_fds(pr, w), "metatest", "1")
    peer = FDPeer(Connection.from_fds(r, pw, strict=True), keep_data=False, hash_data=True)
    result: dict[str, object] = {}

    def read_all() -> None:
        result["items"] = peer.read_items(data_phase=True)

    reader = threading.Thread(target=read_all)
    reader.start()
    from protocol import FileAttrs

    s.mode = Mode.BACKUP
    out = s.item_stream()
    stop = threading.Event()

    def storm(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            s.message("IWQ"[n % 3], f"worker {n} message {i} " + "x" * (i % 50))
            i += 1

    workers = [threading.Thread(target=storm, args=(n,)) for n in range(4)]
    for t in workers:
        t.start()
    chunk = os.urandom(200_000)
    for k in range(20):
        with out.open_file(FileAttrs(name=f"/@t/f{k}", size=len(chunk) * 3)) as fw:
            for _ in range(3):
                fw.write(chunk)
    stop.set()
    for t in workers:
        t.join()
    out.finish()
    reader.join(20)
    for fd in (r, w, pr, pw):
        os.close(fd)
    items = result["items"]
    assert isinstance(items, list) and len(items) == 20
    assert all(i.data_len == 600_000 for i in items)
    assert len(peer.messages) >= 4 and all(m[1].startswith("worker") for m in peer.messages)


def test_session_refuses_sends_after_abort() -> None:
    s, _ = session(b"")
    s.abort("x")
    with pytest.raises(SessionAborted):
        s.send_batch(PacketBatch().add("F"))
