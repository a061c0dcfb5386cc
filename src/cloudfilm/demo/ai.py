"""The demo's AI result (issue 19): the sample lung-nodule plug-in registered, approved and
enabled for the hospital of the demo's first chest CT (which has a painted nodule), and run
on that one study, so that a newcomer opens it in the viewer and sees the overlay and the
findings. Rerunning the demo finds all of it there and runs nothing again."""

from __future__ import annotations

from dataclasses import dataclass

from cloudfilm.demo.province import Province, ai_demo_exam
from cloudfilm.services.access.actor import LOCAL_OPERATOR as OPERATOR
from cloudfilm.services.ai.registry import AlgorithmInput
from cloudfilm.services.container import Services

NAME, VERSION = "lung-nodules (demo)", "0.1"


@dataclass(frozen=True, slots=True)
class DemoAi:
    hospital: str
    study_uid: str
    findings: int
    ran: bool


def prepare(services: Services, province: Province) -> DemoAi | None:
    exam = ai_demo_exam(province)
    if services.ai is None or exam is None:
        return None
    registry, work = services.ai.registry, services.ai.work
    algo = next((a for a in registry.list(OPERATOR)
                 if a.name == NAME and a.version == VERSION), None)
    if algo is None:
        algo, _ = registry.register(OPERATOR, AlgorithmInput(
            name=NAME, version=VERSION, kind="plugin", plugin="builtin:lung-nodules",
            vendor="cloudfilm demo", modalities=("CT",), body_parts=("CHEST",),
            intended_use="Demonstration only: candidates of solid lung nodules on chest CT "
                         "phantoms. Not a medical device; not for diagnosis."))
    if algo.status != "approved":
        registry.approve(OPERATOR, algo.id)
    if exam.hospital.code not in algo.hospitals:
        registry.enable(OPERATOR, algo.id, exam.hospital.code)
    done = [r for r in work.results(OPERATOR, exam.study_uid) if r.algorithm == NAME]
    ran = False
    if not done:
        item = work.create(OPERATOR, algo.id, exam.study_uid)
        work.run(item.uid)
        ran = True
        done = [r for r in work.results(OPERATOR, exam.study_uid) if r.algorithm == NAME]
    found = max((len(r.findings) for r in done if not r.superseded), default=0)
    return DemoAi(exam.hospital.code, exam.study_uid, found, ran)
