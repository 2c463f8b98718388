"""What the backend-process tests share (not a test module): the plugin parameters aimed at
the simulator, and `FakeBacula`, the Director's side of backup chains."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from devkit.driver import backend, job_name
from devkit.fdpeer import BackendError, BackupItem
from devkit.simulator.fixtures import ACCESS_KEY
from protocol import Mode

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
BLOCK = 524288


def params(endpoint: str, *extra: str) -> list[str]:
    return [
        "region=us-east-1",
        f"access_key={ACCESS_KEY}",
        f"secret_key={SECRET}",
        f"endpoint_url={endpoint}",
        "concurrent_threads=8",
        *(extra or ("instances=web-1",)),
    ]



@dataclass
class Job:
    jobid: int
    level: str
    start: int
    items: list[BackupItem]
    snapshots: set[str] = field(default_factory=set)


@dataclass
class FakeBacula:
    """What the Director would do: pick reference jobs and restore chains."""

    sim: object
    tmp: Path
    extra: tuple[str, ...] = ()
    jobs: list[Job] = field(default_factory=list)

    def reference(self, level: str) -> Job | None:
        if level == "F":
            return None
        pool = [j for j in self.jobs if level == "I" or j.level == "F"]
        return pool[-1] if pool else None

    def backup(self, level: str) -> Job:
        jobid = len(self.jobs) + 1
        ref = self.reference(level)
        start = int(time.time())
        kw = {
            "jobid": jobid,
            "level": level,
            "since": ref.start if ref else None,
            "prev": job_name(ref.jobid) if ref else "",
        }
        with backend(Mode.BACKUP, params(self.sim.endpoint, *self.extra), self.tmp, **kw) as be:  # type: ignore[attr-defined]
            items = be.peer.read_items(data_phase=True)
            be.peer.end()
            be.peer.terminate()
            self.messages = list(be.peer.messages)
        job = Job(jobid, level, start, items)
        self.jobs.append(job)
        return job

    def chain(self, upto: int) -> list[Job]:
        """Bacula's selection: last Full, last Differential after it, later Incrementals."""
        jobs = [j for j in self.jobs if j.jobid <= upto]
        full = max(i for i, j in enumerate(jobs) if j.level == "F")
        picked = [jobs[full]]
        diffs = [i for i in range(full + 1, len(jobs)) if jobs[i].level == "D"]
        after = diffs[-1] if diffs else full
        if diffs:
            picked.append(jobs[after])
        picked += [j for j in jobs[after + 1 :] if j.level == "I"]
        return picked

    def restore(self, jobs: list[Job], where: Path, seed: int) -> tuple[list[tuple[str, str]], Path]:
        newest: dict[str, BackupItem] = {}
        for job in jobs:  # the newest version of each path wins
            for it in job.items:
                newest[it.name] = it
        items = list(newest.values())
        random.Random(seed).shuffle(items)
        with backend(Mode.RESTORE, ["region=us-east-1"], self.tmp, where=str(where)) as be:
            for it in items:
                reply = be.peer.restore_file(
                    str(where) + it.name, f"{it.type} {it.size} 0 0 {it.mode:06o} 1 0"
                )
                assert reply == "OK", be.peer.messages
                if it.data:
                    data = bytes(it.data)
                    assert (
                        be.peer.send_data([data[i : i + 65536] for i in range(0, len(data), 65536)]) == "OK"
                    )
            try:
                be.peer.finish()
                be.peer.end()
                be.peer.terminate()
            except BackendError as exc:
                be.peer.messages.append((exc.status, exc.text))
                be.peer.close()
            return list(be.peer.messages), where
