"""AWS errors in job messages carry the operation, the resource and AWS's request id (what
AWS Support asks for); the backend log has the same error with its botocore cause."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from devkit.driver import backend
from devkit.fdpeer import BackendError
from protocol import Mode

from .common import BLOCK, params

REQUEST_ID = re.compile(r"\(request id ([0-9a-f-]{36})\)")


def test_a_refused_call_names_its_request_id_in_the_job_message_and_the_log(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.write_volume(inst["volume_ids"][0], 0, os.urandom(BLOCK))
    sim.client.set_options(deny_tags=["bacula-ec2:state=base"])  # CreateTags answers 403
    with backend(Mode.BACKUP, params(sim.endpoint), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
        assert be.process.wait(timeout=30) == 0
        log = be.log()
    text = err.value.text
    assert err.value.status == "A"
    assert "CreateTags" in text and "UnauthorizedOperation" in text, text
    found = REQUEST_ID.findall(text)
    assert found, text
    assert str(uuid.UUID(found[0])) == found[0]  # the simulator's id, as AWS gives one
    assert found[0] in log
