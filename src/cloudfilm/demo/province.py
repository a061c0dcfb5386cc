"""The demo province: hospitals, residents and the exams they had, all derived from a seed.

The hospitals are fictional (``示范`` marks every name) in real Zhejiang cities, so that the
area codes of the residents' ID numbers are real ones. Exam times are relative to an
``anchor`` (the start of the current hour): most exams are history (days to years ago),
some are recent and uploaded on time, some were taken more than 12 hours before upload
(late, for the timeliness statistics).

Every exam has a diagnostic report (:class:`ReportPlan`): 检查所见 and 诊断意见 written the
way Chinese radiologists write them, drawn from the resident's own (synthetic) health, so
that a resident seen at two hospitals gets comparable reports and the later one compares
with the earlier one (the mutual-recognition case). Reports use their own random streams
(per resident and per exam, from the seed): adding them changed no exam, UID or pixel.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Literal

from cloudfilm.services.identity import national_id

Size = Literal["small", "medium", "large"]
Door = Literal["dimse", "stow"]
Modality = Literal["CT", "MR", "DX", "US"]
ReportKind = Literal["fhir", "sr"]

NATIONAL_ID_ISSUER = "CN-RESIDENT-ID"
_UID_NS = uuid.UUID("0b6b8f3e-5a0c-4d1e-9a57-3c2f6e1d7a90")


def make_uid(*parts: object) -> str:
    """A deterministic ``2.25.`` UID (PS3.5 B.2) derived from ``parts``."""
    return f"2.25.{uuid.uuid5(_UID_NS, '/'.join(map(str, parts))).int}"


@dataclass(frozen=True, slots=True)
class Hospital:
    code: str
    name: str  # Chinese name, as sent in InstitutionName
    city: str
    level: str  # 三级甲等 / 三级乙等 / 二级甲等 / 二级乙等 / 一级 (community)
    area_code: str  # GB/T 2260 code of its district
    ae_title: str
    door: Door
    charset: str  # SpecificCharacterSet of everything it sends
    modalities: tuple[Modality, ...]
    patient_id_prefix: str


# code, name, city, level, area code, door, charset, modalities
_HOSPITALS: tuple[tuple[str, str, str, str, str, Door, str, str], ...] = (
    ("ZJ-HZ-001", "杭州示范第一医院", "杭州", "三级甲等", "330106", "dimse", "GB18030",
     "CT MR DX US"),
    ("ZJ-HZ-002", "杭州示范中医院", "杭州", "三级甲等", "330102", "stow", "ISO_IR 192",
     "CT MR DX US"),
    ("ZJ-HZ-003", "西湖区示范社区卫生服务中心", "杭州", "一级", "330106", "stow", "ISO_IR 192",
     "DX US"),
    ("ZJ-NB-001", "宁波示范人民医院", "宁波", "三级甲等", "330203", "dimse", "GB18030",
     "CT MR DX US"),
    ("ZJ-NB-002", "宁波示范第二医院", "宁波", "二级甲等", "330203", "stow", "ISO_IR 192",
     "CT DX US"),
    ("ZJ-WZ-001", "温州示范医科大学附属医院", "温州", "三级甲等", "330302", "stow", "ISO_IR 192",
     "CT MR DX US"),
    ("ZJ-WZ-002", "鹿城区示范人民医院", "温州", "二级乙等", "330302", "dimse", "GB18030",
     "CT DX US"),
    ("ZJ-SX-001", "绍兴示范市立医院", "绍兴", "三级乙等", "330602", "dimse", "GB18030",
     "CT MR DX US"),
    ("ZJ-SX-002", "越城区示范社区卫生服务中心", "绍兴", "一级", "330602", "dimse", "GB18030",
     "DX US"),
    ("ZJ-JH-001", "金华示范中心医院", "金华", "三级甲等", "330702", "stow", "ISO_IR 192",
     "CT MR DX US"),
    ("ZJ-LS-001", "丽水示范人民医院", "丽水", "二级甲等", "331102", "dimse", "GB18030", "CT DX US"),
    ("ZJ-LS-002", "莲都区示范乡镇卫生院", "丽水", "一级", "331102", "stow", "ISO_IR 192", "DX US"),
)


def hospitals() -> list[Hospital]:
    """The twelve demo hospitals, in a fixed order."""
    out = []
    for index, (code, name, city, level, area, door, cs, mods) in enumerate(_HOSPITALS):
        out.append(Hospital(
            code=code, name=name, city=city, level=level, area_code=area,
            ae_title=code.replace("ZJ-", "").replace("-", "") + "PACS", door=door, charset=cs,
            modalities=tuple(mods.split()),  # type: ignore[arg-type]
            patient_id_prefix=f"{code.split('-')[1]}{index:02d}",
        ))
    return out


# Common surnames and given-name characters with their pinyin (ideographic=alphabetic).
_SURNAMES = [
    ("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"), ("杨", "Yang"),
    ("赵", "Zhao"), ("黄", "Huang"), ("周", "Zhou"), ("吴", "Wu"), ("徐", "Xu"), ("孙", "Sun"),
    ("胡", "Hu"), ("朱", "Zhu"), ("高", "Gao"), ("林", "Lin"), ("何", "He"), ("郭", "Guo"),
    ("马", "Ma"), ("罗", "Luo"), ("梁", "Liang"), ("宋", "Song"), ("郑", "Zheng"), ("谢", "Xie"),
]
_GIVEN = [
    ("小", "Xiao"), ("东", "Dong"), ("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"),
    ("静", "Jing"), ("丽", "Li"), ("强", "Qiang"), ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"),
    ("勇", "Yong"), ("艳", "Yan"), ("杰", "Jie"), ("娟", "Juan"), ("涛", "Tao"), ("明", "Ming"),
    ("超", "Chao"), ("秀", "Xiu"), ("英", "Ying"), ("华", "Hua"), ("玲", "Ling"), ("建", "Jian"),
    ("国", "Guo"), ("平", "Ping"), ("红", "Hong"), ("文", "Wen"), ("辉", "Hui"), ("婷", "Ting"),
]


@dataclass(frozen=True, slots=True)
class Resident:
    index: int
    national_id: str
    family: tuple[str, str]  # (ideographic, pinyin)
    given: tuple[str, str]
    birth_date: date
    sex: str
    city: str

    @property
    def dicom_name(self) -> str:
        """PN with alphabetic and ideographic groups, e.g. ``Wang^XiaoDong=王^小东``."""
        return f"{self.family[1]}^{self.given[1]}={self.family[0]}^{self.given[0]}"

    def local_patient_id(self, hospital: Hospital, hospital_index: int) -> str:
        """Each hospital numbers its patients its own way (7919 is prime: no collisions)."""
        number = (self.index * 7919 + hospital_index * 104729) % 10**7
        return f"{hospital.patient_id_prefix}{number:07d}"


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    uid: str
    number: int
    description: str
    images: int
    kind: str  # generator variant: CT "chest"; MR weighting; DX view; US plane
    rows: int
    columns: int


@dataclass(frozen=True, slots=True)
class ReportPlan:
    """One diagnostic report of an exam, as its hospital issues it.

    ``kind`` is how it travels: ``"fhir"`` a DiagnosticReport POSTed by the hospital's RIS
    (STOW-RS hospitals), ``"sr"`` a DICOM SR the PACS sends over C-STORE with the images
    (DIMSE hospitals). ``amended`` is the one later version (status amended, another
    impression, issued later), if any.
    """

    findings: str  # 检查所见
    impression: str  # 诊断意见
    author: str  # PN of the reporting radiologist (报告医师), e.g. ``Li^Ming=李^明``
    verifier: str  # PN of the verifying radiologist (审核医师)
    issued: datetime  # local time this version was verified
    kind: ReportKind
    before_images: bool = False  # the RIS sends it before the images reach the archive
    amended: ReportPlan | None = None

    @property
    def versions(self) -> tuple[ReportPlan, ...]:
        """The versions in the order they are issued (1 or 2)."""
        return (self,) if self.amended is None else (self, self.amended)

    @property
    def text(self) -> str:
        """Findings and impression as one text, the way a printed report reads."""
        return f"检查所见：\n{self.findings}\n\n诊断意见：\n{self.impression}"


@dataclass(frozen=True, slots=True)
class Exam:
    """One study of one resident at one hospital."""

    index: int
    resident: Resident
    hospital: Hospital
    hospital_index: int
    modality: Modality
    performed: datetime  # local time of the exam
    study_uid: str
    accession: str
    description: str
    body_part: str
    referring: str  # PN of the referring doctor
    series: tuple[SeriesPlan, ...]
    # The diagnostic report; build_province gives every exam one.
    report: ReportPlan | None = None
    # A solid lung nodule painted in the chest CT (centre x, y, z in mm, diameter), for the
    # AI sample plug-in to find in the demo (issue 19); None for every other exam.
    nodule: tuple[float, float, float, float] | None = None

    @property
    def instance_count(self) -> int:
        """Image objects (a report sent as SR is not counted)."""
        return sum(s.images for s in self.series)

    @property
    def report_text(self) -> str | None:
        """The report as one text (its latest version), None without a report."""
        if self.report is None:
            return None
        return self.report.versions[-1].text


@dataclass(frozen=True, slots=True)
class SizeProfile:
    residents: int
    ct_exams: int
    mr_exams: int
    ct_slices: int
    ct_matrix: int
    mr_slices: int
    mr_matrix: int
    mr_series: int
    dr_matrix: int
    us_images: int
    second_exam_share: float  # residents with an earlier exam at another hospital


PROFILES: dict[str, SizeProfile] = {
    "small": SizeProfile(residents=200, ct_exams=6, mr_exams=4, ct_slices=40, ct_matrix=256,
                         mr_slices=12, mr_matrix=192, mr_series=3, dr_matrix=512, us_images=3,
                         second_exam_share=0.15),
    "medium": SizeProfile(residents=300, ct_exams=12, mr_exams=10, ct_slices=300,
                          ct_matrix=512, mr_slices=24, mr_matrix=256, mr_series=4,
                          dr_matrix=1024, us_images=6, second_exam_share=0.3),
    "large": SizeProfile(residents=600, ct_exams=40, mr_exams=30, ct_slices=400,
                         ct_matrix=512, mr_slices=32, mr_matrix=256, mr_series=4,
                         dr_matrix=2048, us_images=8, second_exam_share=0.4),
}

_DOCTORS = [("Li^Ming", "李^明"), ("Chen^Jing", "陈^静"), ("Zhang^Wei", "张^伟"),
            ("Zhou^Hong", "周^红"), ("Huang^Lei", "黄^磊"), ("Xu^Fang", "徐^芳")]
_MR_SERIES = [("T1", "轴位 T1WI"), ("T2", "轴位 T2WI"), ("FLAIR", "轴位 T2 FLAIR"),
              ("DWI", "轴位 DWI b=1000")]


@dataclass(frozen=True, slots=True)
class Province:
    hospitals: tuple[Hospital, ...]
    residents: tuple[Resident, ...]
    exams: tuple[Exam, ...]

    @property
    def instance_count(self) -> int:
        return sum(e.instance_count for e in self.exams)

    def by_modality(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for exam in self.exams:
            counts[exam.modality] = counts.get(exam.modality, 0) + exam.instance_count
        return counts


def build_province(size: Size, *, seed: int, anchor: datetime) -> Province:
    """Plan the province for ``size``: same seed and anchor, same plan, same UIDs.

    Parameters
    ----------
    size
        ``small`` (~700 instances, well under a minute), ``medium`` (chest CTs of 300 slices),
        ``large``.
    seed
        Everything (names, ID numbers, UIDs, pixels, reports) derives from it.
    anchor
        "Now" for exam times; callers pass the start of the current hour so that a rerun
        within the hour produces the very same bytes.
    """
    profile = PROFILES[size]
    rng = random.Random(seed)
    hosp = hospitals()
    cities = sorted({h.city for h in hosp})
    residents = list(_residents(profile.residents, rng, hosp, cities))
    ct_people = set(rng.sample(range(len(residents)), profile.ct_exams))
    mr_people = set(rng.sample(sorted(set(range(len(residents))) - ct_people),
                               profile.mr_exams))
    exams: list[Exam] = []
    for resident in residents:
        home = [h for h in hosp if h.city == resident.city]
        if resident.index in ct_people:
            modality: Modality = "CT"
        elif resident.index in mr_people:
            modality = "MR"
        else:
            modality = rng.choice(["DX", "DX", "US"])
        capable = [h for h in home if modality in h.modalities] or [
            h for h in hosp if modality in h.modalities]
        hospital = rng.choice(capable)
        exams.append(_exam(len(exams), resident, hospital, hosp.index(hospital), modality,
                           _recent_time(rng, anchor), profile, seed, rng))
        if rng.random() < profile.second_exam_share:
            # History: an earlier exam elsewhere, the case cross-hospital sharing is for.
            other = rng.choice([h for h in hosp if h is not hospital])
            old_modality: Modality = rng.choice(["DX", "US"])
            when = anchor - timedelta(days=rng.randint(20, 1800), minutes=rng.randint(0, 600))
            exams.append(_exam(len(exams), resident, other, hosp.index(other), old_modality,
                               when, profile, seed, rng))
    exams += _recognition_priors(exams, hosp, profile, seed)
    exams = _with_ai_nodule(exams)
    return Province(tuple(hosp), tuple(residents), tuple(_with_reports(exams, seed, anchor)))


RECOGNITION_PRIOR_DAYS = 10


def _recognition_priors(exams: list[Exam], hosp: list[Hospital],
                        profile: SizeProfile, seed: int) -> list[Exam]:
    """Exam mutual recognition (issue 15): the first two residents with a recent chest CT
    also had one 10 days earlier at another (tertiary) hospital, so that checking a chest
    CT order for them shows a prior. Its own random stream: the rest of the plan is
    unchanged."""
    rng = random.Random(f"{seed}/recognition")
    tertiary = [h for h in hosp if h.level.startswith("三级") and "CT" in h.modalities]
    added: list[Exam] = []
    for exam in [e for e in exams if e.modality == "CT"][:2]:
        other = rng.choice([h for h in tertiary if h is not exam.hospital])
        when = exam.performed - timedelta(days=RECOGNITION_PRIOR_DAYS, hours=rng.uniform(0, 3))
        added.append(_exam(len(exams) + len(added), exam.resident, other, hosp.index(other),
                           "CT", when, profile, seed, rng))
    return added


# In the right lung, a third of the way down a small chest CT (z = -i * 1.25 mm).
AI_NODULE = (-85.0, -55.0, -16.25, 12.0)


def _with_ai_nodule(exams: list[Exam]) -> list[Exam]:
    """The first chest CT (the recognition example's recent one) gets a lung nodule, the
    demo's AI result; every other exam is unchanged."""
    first = next((e for e in exams if e.modality == "CT"), None)
    return [dataclasses.replace(e, nodule=AI_NODULE) if e is first else e for e in exams]


def ai_demo_exam(province: Province) -> Exam | None:
    """The chest CT with the demo's nodule."""
    return next((e for e in province.exams if e.nodule is not None), None)


def recognition_examples(province: Province) -> list[tuple[Exam, Exam]]:
    """(the recent chest CT, its prior 10 days before elsewhere) pairs of the demo."""
    pairs = []
    for prior in province.exams:
        if prior.modality != "CT":
            continue
        for recent in province.exams:
            if (recent.resident.index == prior.resident.index and recent.modality == "CT"
                    and recent.hospital is not prior.hospital
                    and timedelta(days=RECOGNITION_PRIOR_DAYS - 1)
                    < recent.performed - prior.performed
                    < timedelta(days=RECOGNITION_PRIOR_DAYS + 1)):
                pairs.append((recent, prior))
    return pairs


def _residents(count: int, rng: random.Random, hosp: list[Hospital],
               cities: list[str]) -> Iterator[Resident]:
    seen: set[str] = set()
    area_by_city = {h.city: h.area_code for h in hosp}
    index = 0
    while index < count:
        sex = rng.choice("MF")
        born = date(1940, 1, 1) + timedelta(days=rng.randint(0, 75 * 365))
        city = rng.choice(cities)
        number = national_id.generate(area_code=area_by_city[city], birth_date=born, sex=sex,
                                      rng=rng)
        if number in seen:
            continue
        seen.add(number)
        picks = [rng.choice(_GIVEN) for _ in range(rng.choice((1, 2, 2)))]
        yield Resident(
            index=index, national_id=number, family=rng.choice(_SURNAMES),
            given=("".join(p[0] for p in picks), "".join(p[1] for p in picks)),
            birth_date=born, sex=sex, city=city,
        )
        index += 1


def _recent_time(rng: random.Random, anchor: datetime) -> datetime:
    """Most recent exams reach the archive within 12 hours; one in four does not."""
    if rng.random() < 0.25:
        return anchor - timedelta(hours=rng.uniform(13, 60))
    return anchor - timedelta(hours=rng.uniform(0.5, 11.5))


def _exam(index: int, resident: Resident, hospital: Hospital, hospital_index: int,
          modality: Modality, when: datetime, p: SizeProfile, seed: int,
          rng: random.Random) -> Exam:
    study_uid = make_uid(seed, "study", index, resident.national_id, modality)
    doctor = rng.choice(_DOCTORS)
    series: list[SeriesPlan] = []
    if modality == "CT":
        description, body = "胸部CT平扫", "CHEST"
        series.append(SeriesPlan(make_uid(study_uid, 1), 1, "定位像", 1, "scout", p.ct_matrix,
                                 p.ct_matrix))
        series.append(SeriesPlan(make_uid(study_uid, 2), 2, "胸部 1.25mm 肺窗", p.ct_slices,
                                 "chest", p.ct_matrix, p.ct_matrix))
    elif modality == "MR":
        description, body = "头颅MR平扫", "HEAD"
        for number, (weighting, text) in enumerate(_MR_SERIES[: p.mr_series], start=1):
            series.append(SeriesPlan(make_uid(study_uid, number), number, text, p.mr_slices,
                                     weighting, p.mr_matrix, p.mr_matrix))
    elif modality == "DX":
        description, body = "胸部正位片", "CHEST"
        views = ["PA"] if rng.random() < 0.6 else ["PA", "LL"]
        for number, view in enumerate(views, start=1):
            series.append(SeriesPlan(make_uid(study_uid, number), number,
                                     "胸部正位" if view == "PA" else "胸部侧位", 1, view,
                                     p.dr_matrix, p.dr_matrix))
    else:
        description, body = "腹部彩超（肝胆脾胰肾）", "ABDOMEN"
        series.append(SeriesPlan(make_uid(study_uid, 1), 1, "腹部", p.us_images, "abdomen",
                                 480, 640))
    return Exam(
        index=index, resident=resident, hospital=hospital, hospital_index=hospital_index,
        modality=modality, performed=when, study_uid=study_uid,
        accession=f"{hospital.patient_id_prefix}{when:%y%m%d}{index:05d}",
        description=description, body_part=body, referring=f"{doctor[0]}={doctor[1]}",
        series=tuple(series),
    )


# --- Diagnostic reports --------------------------------------------------------------------

# Exams of one region can be compared with each other (a DR and a CT of the chest, too).
_REGION: dict[str, str] = {"CT": "chest", "DX": "chest", "MR": "head", "US": "abdomen"}
# Lobes as CT names them, and the lung fields in which a radiograph shows them.
_LOBES = (("右肺上叶", "右上肺野"), ("右肺中叶", "右中肺野"), ("右肺下叶", "右下肺野"),
          ("左肺上叶", "左上肺野"), ("左肺下叶", "左下肺野"))
_BRAIN_SITES = ("基底节区", "放射冠区", "半卵圆中心", "丘脑")
_LIVER_PARTS = ("肝右前叶", "肝右后叶", "肝左内叶", "肝左外叶")
_AMEND_NOTES = {
    "chest": "补充意见：请结合临床症状及实验室检查，必要时随访复查。",
    "head": "补充意见：建议结合临床，必要时行头颅MRA或增强扫描。",
    "abdomen": "补充意见：建议结合肝功能、血脂检查，6-12个月后复查超声。",
}
_LATE_SHARE = 0.25  # reports verified more than 12 hours after the exam
_BEFORE_IMAGES_SHARE = 0.10  # FHIR reports the RIS sends before the PACS sends the images
_AMENDED_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class _Health:
    """A resident's (synthetic) conditions: the same whichever hospital looks."""

    lung: str  # normal, nodule, ggo, calcified, emphysema
    lobe: int
    lung_mm: int
    brain: str  # normal, lacunar, white-matter
    brain_side: str
    brain_site: int
    brain_mm: int
    fatty: int  # 0 none, 1 mild, 2 moderate
    cyst_mm: int  # 0: no liver cyst
    cyst_part: int
    gallstone_mm: int
    kidney_stone_mm: int
    aorta: bool  # calcified aortic knob, the elderly's usual radiograph finding


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one exam shows: findings, the impression's items and the lesions a later exam
    of the same region compares with."""

    findings: str
    impressions: tuple[str, ...]
    lesions: tuple[str, ...] = ()


def _health(resident: Resident, seed: int) -> _Health:
    rng = random.Random(f"{seed}/health/{resident.index}")
    # Age against a fixed year, not the anchor: the same resident, the same conditions.
    older = 2024 - resident.birth_date.year >= 55
    return _Health(
        lung=rng.choices(["normal", "nodule", "ggo", "calcified", "emphysema"],
                         weights=[55, 18, 10, 10, 8 if older else 1])[0],
        lobe=rng.randrange(len(_LOBES)), lung_mm=rng.randint(4, 11),
        brain=rng.choices(["normal", "lacunar", "white-matter"],
                          weights=[50, 30, 20] if older else [90, 6, 4])[0],
        brain_side=rng.choice("左右"), brain_site=rng.randrange(len(_BRAIN_SITES)),
        brain_mm=rng.randint(3, 9),
        fatty=rng.choices([0, 1, 2], weights=[70, 20, 10])[0],
        cyst_mm=rng.randint(6, 28) if rng.random() < 0.15 else 0,
        cyst_part=rng.randrange(len(_LIVER_PARTS)),
        gallstone_mm=rng.randint(5, 18) if rng.random() < 0.10 else 0,
        kidney_stone_mm=rng.randint(3, 8) if rng.random() < 0.06 else 0,
        aorta=older and rng.random() < 0.5,
    )


def _ct_chest(h: _Health, exam: Exam, rng: random.Random) -> _Reading:
    lobe = _LOBES[h.lobe][0]
    axial = exam.series[-1]
    where = f"（序列{axial.number}，图像{rng.randint(max(1, axial.images // 5), axial.images)}）"
    lesions: tuple[str, ...] = ()
    if h.lung == "nodule":
        size = min(h.lung_mm, 9)
        lung = (f"{lobe}见一实性小结节，大小约{size}mm×{max(3, size - 1)}mm{where}，边缘光整，"
                "未见分叶及毛刺，邻近胸膜未见牵拉。余肺野未见实变影。")
        follow = "6-12个月" if size >= 6 else "12个月"
        impression = f"{lobe}实性小结节（约{size}mm），考虑良性可能大，建议{follow}后低剂量CT复查。"
        lesions = (f"{lobe}结节",)
    elif h.lung == "ggo":
        lung = (f"{lobe}见一磨玻璃密度结节，直径约{h.lung_mm}mm{where}，边界清楚，其内未见实性"
                "成分及空泡征。余肺野清晰。")
        impression = f"{lobe}磨玻璃结节（约{h.lung_mm}mm），建议3-6个月后薄层CT复查。"
        lesions = (f"{lobe}磨玻璃结节",)
    elif h.lung == "calcified":
        lung = f"{lobe}见斑点状钙化灶及少许纤维条索影。余肺野未见结节及实变影。"
        impression = f"{lobe}陈旧性病变（钙化灶、纤维灶）。"
        lesions = (f"{lobe}钙化灶",)
    elif h.lung == "emphysema":
        lung = "双肺纹理增多、紊乱，双肺上叶见多发小叶中心型无壁低密度区，未见明确结节及实变影。"
        impression = "慢性支气管炎、肺气肿。"
        lesions = ("肺气肿",)
    else:
        lung = "双肺纹理清晰，走行自然，双肺野内未见明确结节、肿块及实变影。"
        impression = "胸部CT平扫未见明显异常。"
    aorta = "主动脉壁见条状钙化。" if h.aorta else ""
    findings = ("胸廓对称，气管居中，各叶段支气管通畅。" + lung + "双侧肺门不大，纵隔内未见肿大"
                "淋巴结。心脏大小形态未见异常，" + aorta + "双侧胸腔未见积液，胸膜未见增厚。")
    impressions = (impression, "主动脉硬化。") if h.aorta else (impression,)
    return _Reading(findings, impressions, lesions)


def _dx_chest(h: _Health, exam: Exam, rng: random.Random) -> _Reading:
    field = _LOBES[h.lobe][1]
    lesions: tuple[str, ...] = ()
    items: list[str] = []
    # A radiograph misses small nodules and ground glass: those residents read as normal.
    if h.lung == "nodule" and h.lung_mm >= 8:
        lung = f"{field}见一小结节影，直径约{h.lung_mm}mm，边界尚清。"
        items.append(f"{field}结节影，建议胸部CT进一步检查。")
        lesions = (f"{_LOBES[h.lobe][0]}结节",)
    elif h.lung == "calcified":
        lung = f"{field}见斑点状高密度影，边界清晰。"
        items.append(f"{field}钙化灶，考虑陈旧性病变。")
        lesions = (f"{_LOBES[h.lobe][0]}钙化灶",)
    elif h.lung == "emphysema":
        lung = "双肺纹理增多、紊乱，双肺透亮度增高，肋间隙增宽，膈肌位置低平。"
        items.append("慢性支气管炎、肺气肿改变，请结合临床。")
        lesions = ("肺气肿",)
    elif rng.random() < 0.15:  # the winter cough: seen once, not a lasting condition
        lung = "双肺纹理增多、增粗，以双下肺为著，未见明确实变影。"
        items.append("双肺纹理增多，考虑支气管炎改变，请结合临床。")
    else:
        lung = "双肺纹理清晰，双肺野内未见明确实变及占位影。"
    heart = "心影大小形态正常，主动脉结突出并见弧形钙化。" if h.aorta else "心影大小形态正常。"
    if h.aorta:
        items.append("主动脉硬化。")
    views = "正侧位" if len(exam.series) > 1 else "正位"
    findings = (f"胸部{views}片示：胸廓对称，气管居中。" + lung + "双肺门不大。" + heart
                + "双膈面光整，双侧肋膈角锐利。")
    return _Reading(findings, tuple(items) or ("心肺膈未见明显异常。",), lesions)


def _mr_head(h: _Health, exam: Exam, rng: random.Random) -> _Reading:
    dwi = any(s.kind == "DWI" for s in exam.series)
    site = _BRAIN_SITES[h.brain_site]
    lesions: tuple[str, ...] = ()
    if h.brain == "lacunar":
        lesion = (f"{h.brain_side}侧{site}见一小斑点状长T1长T2信号影，直径约{h.brain_mm}mm，FLAIR"
                  "序列呈高信号" + ("，DWI未见弥散受限" if dwi else "") + "。")
        impression = f"{h.brain_side}侧{site}腔隙性脑梗死（陈旧性）。"
        lesions = (f"{h.brain_side}侧{site}腔隙灶",)
    elif h.brain == "white-matter":
        lesion = ("双侧侧脑室旁及半卵圆中心白质内见多发斑点状长T2信号影，FLAIR呈高信号，边界欠清"
                  + ("，DWI未见弥散受限" if dwi else "") + "。")
        impression = "脑白质高信号（Fazekas 1级），考虑脑小血管病。"
        lesions = ("脑白质高信号",)
    else:
        lesion = "脑实质内未见明确异常信号影" + ("，DWI未见弥散受限高信号" if dwi else "") + "。"
        impression = "头颅MR平扫未见明显异常。"
    findings = ("双侧大脑半球对称，灰白质分界清楚。" + lesion + "脑室系统大小形态正常，脑沟、脑裂"
                "未见增宽加深。中线结构居中。小脑、脑干未见异常信号。")
    return _Reading(findings, (impression,), lesions)


def _us_abdomen(h: _Health, exam: Exam, rng: random.Random) -> _Reading:
    items: list[str] = []
    lesions: list[str] = []
    if h.fatty:
        far = "明显" if h.fatty == 2 else "不明显"
        liver = (f"肝脏大小正常，包膜光整，实质回声细密增强，远场回声衰减{far}，肝内管道结构显示"
                 "欠清。")
        items.append(f"{'中度' if h.fatty == 2 else '轻度'}脂肪肝。")
        lesions.append("脂肪肝")
    else:
        liver = "肝脏大小形态正常，包膜光整，实质回声均匀，肝内管道结构清晰。"
    if h.cyst_mm:
        part = _LIVER_PARTS[h.cyst_part]
        liver += (f"{part}见一无回声区，大小约{h.cyst_mm}mm×{max(4, h.cyst_mm - 3)}mm，边界清，"
                  "壁薄光滑，后方回声增强，CDFI未见血流信号。")
        items.append(f"肝囊肿（{part}）。")
        lesions.append("肝囊肿")
    if h.gallstone_mm:
        gall = (f"胆囊大小正常，壁毛糙，腔内见一强回声团，大小约{h.gallstone_mm}mm，后伴声影，"
                "随体位改变而移动。")
        items.append("胆囊结石。")
        lesions.append("胆囊结石")
    else:
        gall = "胆囊大小正常，壁光滑，腔内未见异常回声。胆总管不扩张。"
    if h.kidney_stone_mm:
        kidneys = (f"双肾大小形态正常，右肾下盏见一强回声，大小约{h.kidney_stone_mm}mm，后伴声影，"
                   "集合系统未见分离。")
        items.append("右肾结石。")
        lesions.append("右肾结石")
    else:
        kidneys = "双肾大小形态正常，皮髓质分界清晰，集合系统未见分离。"
    findings = (liver + gall + "胰腺大小形态正常，回声均匀，主胰管未见扩张。脾脏大小正常，实质回声"
                "均匀。" + kidneys)
    return _Reading(findings, tuple(items) or ("肝、胆、胰、脾、双肾未见明显异常。",),
                    tuple(lesions))


_READERS = {"CT": _ct_chest, "DX": _dx_chest, "MR": _mr_head, "US": _us_abdomen}


def _radiologists(hospital: Hospital) -> tuple[str, str, str]:
    """Two reporting radiologists and the verifying one (the chief) of a hospital, as PN."""
    rng = random.Random(f"radiologists/{hospital.code}")
    names: list[str] = []
    while len(names) < 3:
        family = rng.choice(_SURNAMES)
        given = [rng.choice(_GIVEN) for _ in range(rng.choice((1, 2, 2)))]
        name = (f"{family[1]}^{''.join(g[1] for g in given)}="
                f"{family[0]}^{''.join(g[0] for g in given)}")
        if name not in names:
            names.append(name)
    return names[0], names[1], names[2]


def _comparison(exam: Exam, reading: _Reading, prior: Exam,
                prior_reading: _Reading) -> tuple[str, str]:
    """The sentence comparing with the resident's earlier exam (often another hospital's,
    retrieved through the platform instead of repeated), and the impression's note."""
    place = "本院" if prior.hospital is exam.hospital else f"外院（{prior.hospital.name}）"
    same = [x for x in reading.lesions if x in prior_reading.lesions]
    new = [x for x in reading.lesions if x not in prior_reading.lesions]
    gone = [x for x in prior_reading.lesions if x not in reading.lesions]
    parts = []
    if same:
        parts.append("、".join(same) + "与前片相仿")
    if new:
        parts.append("、".join(new) + "前片未见明确显示")
    if gone:
        parts.append("前片所示" + "、".join(gone) + "本次未见明确显示")
    sentence = (f"\n与{prior.performed:%Y-%m-%d}{place}{prior.description}比较："
                + ("，".join(parts) if parts else "未见明显变化") + "。")
    note = f"与{place}前片比较，" + "、".join(same) + "无明显变化。" if same and not new else ""
    return sentence, note


def _numbered(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "\n".join(
        f"{n}. {item}" for n, item in enumerate(items, start=1))


def _report(exam: Exam, reading: _Reading, prior: tuple[Exam, _Reading] | None,
            staff: tuple[str, str, str], seed: int, anchor: datetime) -> ReportPlan:
    rng = random.Random(f"{seed}/report/{exam.index}")
    findings, items = reading.findings, list(reading.impressions)
    if prior is not None:
        sentence, note = _comparison(exam, reading, *prior)
        findings += sentence
        if note:
            items.append(note)
    # Verified 0.5-12 h after the exam, some 12.5-30 h (late); never after the anchor.
    room = (anchor - exam.performed).total_seconds() / 3600  # at least 0.5 (_recent_time)
    hours = rng.uniform(12.5, 30) if rng.random() < _LATE_SHARE else rng.uniform(0.5, 12)
    if hours > room:
        hours = rng.uniform(min(0.5, room), room)
    issued = (exam.performed + timedelta(hours=hours)).replace(microsecond=0)
    kind: ReportKind = "sr" if exam.hospital.door == "dimse" else "fhir"
    before = kind == "fhir" and rng.random() < _BEFORE_IMAGES_SHARE
    author, verifier = staff[rng.randrange(2)], staff[2]
    amended = None
    left = (anchor - issued).total_seconds() / 3600
    if rng.random() < _AMENDED_SHARE and left >= 1:
        later = issued + timedelta(hours=rng.uniform(1, min(48.0, left)))
        amended = ReportPlan(findings, _numbered(items) + "\n" + _AMEND_NOTES[_REGION[
            exam.modality]], author, verifier, later.replace(microsecond=0), kind)
    return ReportPlan(findings, _numbered(items), author, verifier, issued, kind, before,
                      amended)


def _with_reports(exams: list[Exam], seed: int, anchor: datetime) -> list[Exam]:
    """Every exam with its report; the latest earlier exam of the same region is compared."""
    health: dict[int, _Health] = {}
    readings: dict[int, _Reading] = {}
    by_resident: dict[int, list[Exam]] = {}
    for exam in exams:
        resident = exam.resident
        if resident.index not in health:
            health[resident.index] = _health(resident, seed)
        rng = random.Random(f"{seed}/reading/{exam.index}")
        readings[exam.index] = _READERS[exam.modality](health[resident.index], exam, rng)
        by_resident.setdefault(resident.index, []).append(exam)
    staff = {h.code: _radiologists(h) for h in {e.hospital for e in exams}}
    out = []
    for exam in exams:
        earlier = [e for e in by_resident[exam.resident.index]
                   if e.performed < exam.performed
                   and _REGION[e.modality] == _REGION[exam.modality]]
        prior = max(earlier, key=lambda e: e.performed) if earlier else None
        plan = _report(exam, readings[exam.index],
                       (prior, readings[prior.index]) if prior is not None else None,
                       staff[exam.hospital.code], seed, anchor)
        out.append(replace(exam, report=plan))
    return out
