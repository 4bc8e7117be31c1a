"""The de-identification recognizers (meddata.deid): every entity type and every clinical
negative in both languages, the validators, both replacement modes, and the real dialogue
rows of the Chinese medical dialogue sample."""

from __future__ import annotations

import csv
import pickle
import random
import re
from pathlib import Path

import pytest

from meddata.deid import (
    ENTITIES,
    PLACEHOLDERS,
    Detector,
    Redactor,
    bank_card_ok,
    example,
    luhn_ok,
    pseudonym,
    resident_id_ok,
)

SALT = b"test-salt-0123456789abcdef"
SAMPLE_CSV = (Path(__file__).resolve().parents[2] / "shared" / "samples" / "raw"
              / "chinese_medical_dialogue" / "样例_内科5000-6000.csv")

# (text, entity, the identifying value)
POSITIVES = [
    # Chinese
    ("我叫张伟，最近总是头晕。", "name", "张伟"),
    ("患者王秀英，女，56岁，因胸痛入院。", "name", "王秀英"),
    ("姓名：欧阳娜娜", "name", "欧阳娜娜"),
    ("谢谢李明医生的耐心解答！", "name", "李明"),
    ("刘大夫您好，我想问一下。", "name", "刘"),
    ("主治医师：王建华", "name", "王建华"),
    ("王明医师建议复查。", "name", "王明"),
    ("张女士您好，", "name", "张"),
    ("身份证号：11010519491231002X", "id_number", "11010519491231002X"),
    ("身份证440524188001010014，请核对。", "id_number", "440524188001010014"),
    ("旧证件号110105491231002。", "id_number", "110105491231002"),
    ("我的手机号13812345678，方便联系。", "phone", "13812345678"),
    ("手机：+86 139-1234-5678", "phone", "+86 139-1234-5678"),
    ("请拨打186 0101 2345找我", "phone", "186 0101 2345"),
    ("联系电话010-62751234", "phone", "010-62751234"),
    ("座机(0755)86001234转802", "phone", "(0755)86001234转802"),
    ("请发到zhangwei88@163.com，谢谢", "email", "zhangwei88@163.com"),
    ("我在https://www.haodf.com/doctor/123.html上看到的", "url", "https://www.haodf.com/doctor/123.html"),
    ("登录IP：192.168.10.24", "ip", "192.168.10.24"),
    ("服务器fe80::1ff:fe23:4567:890a无法访问", "ip", "fe80::1ff:fe23:4567:890a"),
    ("退款到银行卡6222021234567890128。", "bank_card", "6222021234567890128"),
    ("卡号：4111 1111 1111 1111", "bank_card", "4111 1111 1111 1111"),
    ("家住浙江省杭州市西湖区文三路478号2幢301室，离医院远。", "address", "杭州市西湖区文三路478号"),
    ("地址：上海市浦东新区张江路88号", "address", "张江路88号"),
    ("住院号：ZY2023123456", "record_number", "ZY2023123456"),
    ("病历号 8812345，请调阅。", "record_number", "8812345"),
    ("门诊号：MZ20231108", "record_number", "MZ20231108"),
    ("就诊卡号是A1234567。", "record_number", "A1234567"),
    ("出生日期：1985年3月12日", "birth_date", "1985年3月12日"),
    ("我生日是1990-07-21，", "birth_date", "1990-07-21"),
    ("老人今年92岁，", "age_over_89", "92"),
    # English
    ("My name is John Smith, and I have a cough.", "name", "John Smith"),
    ("Mr. Robert Brown reports fatigue.", "name", "Robert Brown"),
    ("Dr. Nguyen recommended rest.", "name", "Nguyen"),
    ("Patient: Mary Johnson, admitted for chest pain.", "name", "Mary Johnson"),
    ("Doctor Patel said it is benign.", "name", "Patel"),
    ("Nurse Kim checked the IV.", "name", "Kim"),
    ("SSN 219-09-9999 on file.", "ssn", "219-09-9999"),
    ("Her social security number is 219099999.", "ssn", "219099999"),
    ("Call me at (212) 867-5309 any time.", "phone", "(212) 867-5309"),
    ("Phone: +1 415.867.5309", "phone", "+1 415.867.5309"),
    ("Email me at jsmith@gmail.com please.", "email", "jsmith@gmail.com"),
    ("See www.myblog.net/posts/12 for my records.", "url", "www.myblog.net/posts/12"),
    ("Login from IP 10.0.0.254 was blocked.", "ip", "10.0.0.254"),
    ("Charge card 4012-8888-8888-1881 for the copay.", "bank_card", "4012-8888-8888-1881"),
    ("I live at 1234 Oak Street, Apt 5B, Springfield, IL 62704.", "address",
     "1234 Oak Street, Apt 5B, Springfield, IL 62704"),
    ("MRN: 00123456", "record_number", "00123456"),
    ("Chart # A-77812 reviewed.", "record_number", "A-77812"),
    ("DOB: 03/14/1962.", "birth_date", "03/14/1962"),
    ("She was born on March 3, 1948.", "birth_date", "March 3, 1948"),
    ("A 94-year-old woman presents with confusion.", "age_over_89", "94"),
]

NEGATIVES = [
    # Chinese clinical text
    "血压150/95mmHg，体温38.5℃，心率88次/分。",
    "阿莫西林0.5g，每日3次，服用二甲双胍500mg。",
    "空腹血糖7.8mmol/L，白细胞计数12.5×10^9/L，血红蛋白98g/L。",
    "ICD-10编码I10，E11.9。",
    "病程3年，随访6个月，孕32周。",
    "患者65岁，男性，89岁老人。",
    "帕金森病多年，华法林3mg口服，黄疸3天，高血压病史10年。",
    "患者于2天前出现发热，常感乏力，高热39.2℃。",
    "癫痫患者应当注意饮食，麻烦医生指导一下。",
    "谢谢医生！医生您好。",
    "医生：您好，根据你的描述，应该是胃炎，何时发病的？",
    "这位先生请坐，老先生和年轻女士请排队。",
    "检查时间2023-10-12 08:30，复查2024年1月。",
    "肌酐132μmol/L，CT值45HU，BMI 27.4。",
    # English clinical text
    "BP 140/90 mmHg, temperature 101.3 F, pulse 88/min, SpO2 94%.",
    "Metformin 500 mg twice daily; HbA1c 7.8%; LDL 130 mg/dL.",
    "ICD-10 E11.9 and ICD-9 250.00.",
    "Symptoms for 3 weeks; follow-up in 6 months.",
    "A 67-year-old woman, aged 45 at onset; an 89-year-old man.",
    "Parkinson's disease, Graves' disease, Hodgkin lymphoma, Bell's palsy, Cushing's syndrome.",
    "WBC 12,500/mm3, platelets 150000/uL, potassium 3.2 mEq/L, creatinine 1.4 mg/dL.",
    "Patient: 45-year-old male with chest pain.",
    "Doctor, I have a cough. Nurse: Please wait.",
    "Version 1.2.3 of the guideline; see table 2.10.",
]


@pytest.fixture(scope="module")
def redactor():
    return Redactor(Detector())


@pytest.mark.parametrize("text,entity,value", POSITIVES, ids=[f"{e}:{v}" for _, e, v in POSITIVES])
def test_each_entity_is_replaced(redactor, text, entity, value):
    out, counts = redactor.redact(text)
    assert value not in out, out
    assert counts[entity] >= 1, (out, counts)
    assert PLACEHOLDERS[entity] in out


@pytest.mark.parametrize("text", NEGATIVES)
def test_clinical_text_is_not_changed(redactor, text):
    out, counts = redactor.redact(text)
    assert out == text and not counts, (out, counts)


def test_only_the_value_changes(redactor):
    out, _ = redactor.redact("住院号：ZY2023123456，血压120/80mmHg，MRN: 00123456; BP 140/90.")
    assert out == "住院号：[RECORD]，血压120/80mmHg，MRN: [RECORD]; BP 140/90."


@pytest.mark.parametrize("value,ok", [
    ("11010519491231002X", True), ("11010519491231002x", True), ("110105194912310021", False),
    ("990105194912310021", False), ("110105194913310021", False), ("110105491231002", True),
    ("110105491331002", False)])
def test_resident_id_validator(value, ok):
    assert resident_id_ok(value) is ok


def test_invalid_numbers_are_left_alone(redactor):
    # wrong check digit, wrong Luhn sum, no mobile prefix, no valid area code, invalid SSN
    for text in ("身份证号110105194912310021", "卡号6222021234567890127", "号码12012345678",
                 "(123) 456-7890 is not a number", "SSN 000-12-3456", "IP 300.1.2.3"):
        out, counts = redactor.redact(text)
        assert out == text, (text, counts)


def test_luhn_and_card_prefixes():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert bank_card_ok("6222021234567890128")
    assert not bank_card_ok("1234567812345670")  # Luhn-valid, no issuer prefix


def test_ages_up_to_the_limit_are_kept():
    assert Redactor(Detector()).redact("89岁，90岁")[0] == "89岁，[AGE]岁"
    assert Redactor(Detector(max_age=95)).redact("92岁，96岁")[0] == "92岁，[AGE]岁"


def test_entity_selection():
    d = Detector(entities=("email",))
    assert [f.entity for f in d.find("a@b.com 13812345678")] == ["email"]
    with pytest.raises(ValueError, match="unknown entity type"):
        Detector(entities=("shoe_size",))


def test_pseudonyms_are_consistent_and_not_found_again():
    r = Redactor(Detector(), mode="pseudonym", salt=SALT)
    text = ("我叫张伟，手机13812345678，身份证11010519491231002X，邮箱zw@163.com，"
            "卡号6222021234567890128，住院号：ZY2023123456，出生日期：1985年3月12日，"
            "家住杭州市西湖区文三路478号。My name is John Smith, call (212) 867-5309, "
            "SSN 219-09-9999, IP 10.0.0.254, see https://x.org/a, MRN: 00123456, "
            "I live at 12 Oak Street.")
    out1, counts = r.redact(text)
    out2, _ = r.redact(text)
    assert out1 == out2
    for value in ("张伟", "13812345678", "11010519491231002X", "zw@163.com", "6222021234567890128",
                  "ZY2023123456", "3月12日", "文三路", "John Smith", "867-5309", "219-09-9999",
                  "10.0.0.254", "x.org", "00123456", "Oak Street"):
        assert value not in out1, value
    assert sum(counts.values()) >= 15
    assert Detector().find(out1) == [], [out1[f.start:f.end] for f in Detector().find(out1)]
    # the same value gets the same fake in another text; another salt gives other fakes
    assert pseudonym("phone", "13812345678", SALT) in r.redact("电话13812345678")[0]
    other = Redactor(Detector(), mode="pseudonym", salt=b"another-salt-0123456789")
    assert other.redact(text)[0] != out1


def test_pseudonym_mode_needs_a_salt_and_never_pickles_it():
    with pytest.raises(ValueError, match="salt"):
        Redactor(Detector(), mode="pseudonym", salt=b"")
    with pytest.raises(ValueError, match="mode"):
        Redactor(Detector(), mode="hash")
    with pytest.raises(TypeError, match="salt"):
        pickle.dumps(Redactor(Detector(), mode="pseudonym", salt=SALT))


def test_example_snippets_hold_no_value():
    text = "患者张伟，手机13812345678，身份证11010519491231002X，" + "病情稳定。" * 20
    snippet = example(text, Detector().find(text))
    assert "张伟" not in snippet and "13812345678" not in snippet and "1231002X" not in snippet
    assert "[NAME]" in snippet and "[PHONE]" in snippet


def test_placeholders_cover_every_entity():
    assert set(PLACEHOLDERS) == set(ENTITIES)


# ---- the real Chinese medical dialogue rows ------------------------------------------------
def _sample_rows():
    if not SAMPLE_CSV.exists():
        pytest.skip("../shared/samples/raw is absent")
    with open(SAMPLE_CSV, encoding="gb18030", newline="") as f:
        return list(csv.DictReader(f))


_CLINICAL = re.compile(r"\d+(?:\.\d+)?\s*(?:mg|g|ml|mmHg|mmol/L|℃|度|次|天|周|月|年|岁|小时|分钟|%)"
                       r"|\d+/\d+")


def test_real_dialogue_rows_keep_their_clinical_text(redactor):
    rows = _sample_rows()
    changed = 0
    for row in rows:
        for col in ("title", "ask", "answer"):
            out, counts = redactor.redact(row[col])
            changed += out != row[col]
            for value in _CLINICAL.findall(row[col]):
                if int(re.match(r"\d+", value).group()) <= 89 or "岁" not in value:
                    assert value in out, (value, row[col], out)
    # the sample's patients wrote no identifiers; a few context words may still fire
    assert changed <= len(rows) * 3 // 100, changed


def test_identifiers_planted_in_real_rows_are_removed_and_nothing_else(redactor):
    rows = _sample_rows()
    rng = random.Random(3)
    planted = [("我叫赵建国，", "我叫[NAME]，"), ("电话13912345678，", "电话[PHONE]，"),
               ("身份证号11010519491231002X，", "身份证号[ID]，"), ("住院号：ZY2023000123，", "住院号：[RECORD]，"),
               ("邮箱lihua@qq.com，", "邮箱[EMAIL]，")]
    checked = 0
    for row in rows[:120]:
        text = row["ask"]
        base, _ = redactor.redact(text)
        if base != text:
            continue  # keep to rows the detector leaves alone
        plant, expect = planted[checked % len(planted)]
        cut = rng.randrange(len(text) + 1)
        while 0 < cut < len(text) and text[cut - 1] not in "，。？！,.?!":
            cut -= 1  # plant between sentences, as patients write
        out, counts = redactor.redact(text[:cut] + plant + text[cut:])
        assert out == text[:cut] + expect + text[cut:], out
        checked += 1
    assert checked >= 100


def test_fakes_are_never_found_again():
    rng = random.Random(0)
    d = Detector()
    for _ in range(300):
        digits = "".join(str(rng.randint(0, 9)) for _ in range(20))
        for entity, context, value in (
                ("id_number", "身份证号", "11010519" + digits[:10]),
                ("id_number", "身份证号", "110105" + digits[:9]),
                ("phone", "手机", "138" + digits[:8]), ("phone", "phone ", "(212) 867-" + digits[:4]),
                ("bank_card", "卡号", "6222" + digits[:15]), ("ssn", "SSN ", "219-09-" + digits[:4]),
                ("record_number", "MRN: ", digits[:8]), ("ip", "IP ", f"10.0.{digits[0]}.{digits[1]}"),
                ("name", "我叫", "张" + "伟"), ("name", "My name is ", "John Smith"),
                ("address", "家住", f"杭州市西湖区文三路{digits[:3]}号"),
                ("birth_date", "DOB: ", f"03/14/19{digits[:2]}")):
            fake = pseudonym(entity, value, SALT + digits.encode())
            assert d.find(context + fake + "。") == [], (entity, fake)


def test_real_instruction_and_reasoning_rows_keep_their_text(redactor):
    """ShenNong-TCM records and HuatuoGPT-o1's demo data (English and Chinese questions,
    chains of thought, responses): only the one age over 89 is replaced."""
    import json

    root = SAMPLE_CSV.parents[1]
    if not root.exists():
        pytest.skip("../shared/samples/raw is absent")
    texts = []
    with open(root / "shennong" / "ChatMed_TCM-v0.2-5records.jsonl", encoding="utf-8") as f:
        texts += [v for line in f for v in json.loads(line).values() if isinstance(v, str)]
    with open(root / "huatuo_o1_demo" / "demo_data.json", encoding="utf-8") as f:
        texts += [v for r in json.load(f) for v in r.values() if isinstance(v, str)]
    found = {}
    for text in texts:
        out, counts = redactor.redact(text)
        for entity, n in counts.items():
            found[entity] = found.get(entity, 0) + n
        if not counts:
            assert out == text
    assert len(texts) > 900
    assert found == {"age_over_89": 1}  # "before his death at 90 years old"


@pytest.mark.parametrize(("text", "name"), [
    ("我叫王小明。", "王小明"), ("我的名字是李小红。", "李小红"),       # 小 after a trigger
    ("张伟先生应做胸片检查", "张伟"), ("李明先生应该复查", "李明"),     # a title at the start
    ("刘洋教授说要手术", "刘洋")])
def test_names_with_xiao_and_before_a_title_at_the_start(text, name):
    found = Redactor(Detector()).redact(text)[0]
    assert name not in found and "[NAME]" in found


@pytest.mark.parametrize("text", ["患者小便不畅三天", "头痛三小时了", "先生您好，头痛三天",
                                  "医生说要复查"])
def test_xiao_and_titles_without_a_name_stay(text):
    assert Redactor(Detector()).redact(text)[0] == text
