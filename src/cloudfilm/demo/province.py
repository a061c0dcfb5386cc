"""The demo province: hospitals, residents and the exams they had, all derived from a seed.

The hospitals are fictional (``示范`` marks every name) in real Zhejiang cities, so that the
area codes of the residents' ID numbers are real ones. Exam times are relative to an
``anchor`` (the start of the current hour): most exams are history (days to years ago),
some are recent and uploaded on time, some were taken more than 12 hours before upload
(late, for the timeliness statistics).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from cloudfilm.services.identity import national_id

Size = Literal["small", "medium", "large"]
Door = Literal["dimse", "stow"]
Modality = Literal["CT", "MR", "DX", "US"]

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
    # Free text of the diagnostic report; None until the reports issue generates them.
    report_text: str | None = field(default=None)

    @property
    def instance_count(self) -> int:
        return sum(s.images for s in self.series)


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
        Everything (names, ID numbers, UIDs, pixels) derives from it.
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
    return Province(tuple(hosp), tuple(residents), tuple(exams))


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
