"""Any bytes in any text field of the setup: the backend (a real process, stderr captured)
writes nothing to fd 2, answers with an A that says what was wrong (or goes on where the
text is legal), exits 0, and shows no secret, in its packets or its log
(metaplugin-protocol.md §1.10, §2.4, §4.10)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bacula_ec2.backend import PLUGIN_API
from devkit.simulator.fixtures import ACCESS_KEY

REPO = Path(__file__).resolve().parents[2]
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFUZZSECRET1"  # in the Params block
STRAY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789STRAY"  # a line where it does not belong
FIELDS = ("job_name", "prev", "param_key", "param_value", "instances", "start", "where", "fname", "workdir")
TEXT_FIELDS = ("job_name", "prev", "param_key", "param_value", "instances")  # must be UTF-8


def packet(status: str, payload: bytes = b"") -> bytes:
    return b"%c%06d\n" % (ord(status), len(payload)) + payload


def c(line: bytes) -> bytes:
    return packet("C", line + b"\n")


@dataclass
class Case:
    mode: str  # "B" or "R"
    field: str
    dirt: bytes
    stray: tuple[int, bytes] | None  # (position in the packet list, line)


dirt = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.builds(lambda a, b: a + b"\xff" + b, st.binary(max_size=6), st.binary(max_size=6)),
    st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")),
).map(lambda b: b.replace(b"/", b"_").replace(b"\n", b"") or b"\xe9")
strays = st.sampled_from(
    [
        b"secret_key=" + STRAY.encode(),
        b"session_token=" + STRAY.encode(),
        b"aws_secret_access_key=" + STRAY.encode(),
    ]
)
cases = st.builds(
    Case,
    mode=st.sampled_from(["B", "R"]),
    field=st.sampled_from(FIELDS),
    dirt=dirt,
    stray=st.one_of(st.none(), st.tuples(st.integers(0, 25), strays)),
)


def stream(case: Case, workdir: Path, endpoint: str) -> bytes:
    d = case.dirt

    def dirty(field: str, clean: bytes) -> bytes:
        return clean + d if case.field == field else clean

    where = dirty("where", str(workdir / "restore").encode())
    job = [
        b"Name=" + dirty("job_name", b"ec2fuzz.2026-11-26_16.00.00_07"),
        b"JobID=7",
        b"Type=" + case.mode.encode(),
    ]
    if case.mode == "B":
        job.append(b"Level=F")
    else:
        job += [b"Where=" + where, b"Replace=a"]
    job += [b"PrevJobName=" + dirty("prev", b""), b"WorkingDir=" + dirty("workdir", str(workdir).encode())]
    params = [
        b"region=us-east-1",
        b"access_key=" + ACCESS_KEY.encode(),
        b"secret_key=" + SECRET.encode(),
        b"endpoint_url=" + endpoint.encode(),
        b"instances=" + dirty("instances", b"no-such-web"),
    ]
    if case.field == "param_key":
        params.append(b"concurrent" + d + b"=4")
    if case.field == "param_value":
        params.append(b"snapshot_tags=owner=" + d)
    start = dirty("start", b"BackupStart" if case.mode == "B" else b"RestoreStart")
    packets = [
        c(b"Hello ec2 " + PLUGIN_API.encode()),
        c(b"Job"),
        *map(c, job),
        packet("F"),
        c(b"Params"),
        *map(c, params),
        packet("F"),
        c(start),
    ]
    if case.mode == "R":
        iid = b"i-0123456789abcdef0"
        name = where + b"/@amazon-ec2/" + iid + b"/" + dirty("fname", iid) + b".json"
        packets += [c(b"FNAME:" + name), c(b"STAT:F 10 0 0 100640 1 0"), c(b"TSTAMP:1 2 3"), packet("F")]
    if case.stray is not None:
        at, line = case.stray
        packets.insert(min(at, len(packets)), c(line))
    return b"".join(packets)


def parse(out: bytes) -> list[tuple[str, bytes]]:
    got, pos = [], 0
    while pos < len(out):
        header = out[pos : pos + 8]
        assert len(header) == 8 and header[7:] == b"\n" and header[1:7].isdigit(), out[pos:]
        status, n = chr(header[0]), int(header[1:7])
        assert status in "CDFTEAIWQ", header
        n = 0 if status in "FT" else n
        got.append((status, out[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    return got


def run(case: Case, endpoint: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bacula-ec2-fuzz-") as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACULA_EC2_LOG", "AWS_"))}
        proc = subprocess.run(
            [sys.executable, "-m", "bacula_ec2.backend"],
            input=stream(case, workdir, endpoint),  # then EOF, as an FD that gives up
            capture_output=True,
            cwd=REPO,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.stderr == b"", proc.stderr
        assert proc.returncode == 0
        packets = parse(proc.stdout)
        texts = [p.decode("utf-8") for s, p in packets if s in "EAIWQ"]  # always valid UTF-8
        aborts = [p.decode() for s, p in packets if s == "A"]
        assert len(aborts) <= 1 and (not aborts or packets[-1][0] == "A"), packets
        for text in aborts:
            assert text.strip() and "Traceback" not in text, text
            assert "internal error" not in text and "ec2-backend failed" not in text, text
        undecodable = case.dirt.decode("utf-8", "replace") != case.dirt.decode("utf-8", "surrogateescape")
        if case.stray is None and case.field in TEXT_FIELDS and undecodable:
            assert aborts and "is not UTF-8 text" in aborts[0], (case, aborts)
        logs = b"".join(p.read_bytes() for p in workdir.rglob("*") if p.is_file())
        for secret in (SECRET, STRAY):
            for shown in [*texts, proc.stdout.decode("utf-8", "replace"), logs.decode("utf-8", "replace")]:
                assert secret[:12] not in shown, (case, shown)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases)
@example(case=Case("B", "param_key", b"\xe9", None))  # issue 9: a Latin-1 byte in a key
@example(case=Case("B", "job_name", b"\xff", None))
@example(case=Case("B", "param_value", b"ok", (9, b"secret_key=" + STRAY.encode())))  # for "Params"
@example(case=Case("R", "fname", b"\xfe\xff", (3, b"session_token=" + STRAY.encode())))  # in the Job block
@example(case=Case("R", "where", b"\x80", None))
@example(case=Case("B", "start", b"\xff", (0, b"secret_key=" + STRAY.encode())))  # before Hello
def test_any_bytes_in_the_setup(simulator, case: Case) -> None:  # type: ignore[no-untyped-def]
    run(case, simulator.endpoint)
