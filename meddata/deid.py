"""Find and replace patients' identifiers in Chinese and English medical text.

`Detector.find(text)` returns the identifier spans of one text; `Redactor.redact(text)`
returns the text with each span replaced and the counts by entity type. Everything is
rules with validators, no model:

- structured values are matched by pattern and then validated: resident ID numbers by
  region code, birth date and the ISO 7064 check digit (the 15-digit form by region code
  and date); bank cards by issuer prefix and the Luhn sum; phone numbers by Google's
  `phonenumbers` metadata (Chinese area codes, North American area codes) or the Chinese
  mobile prefixes; IP addresses by Python's `ipaddress`; SSNs by the SSA's rules (no 000,
  666 or 9xx area, no 00 group, no 0000 serial);
- names, record numbers, dates of birth and addresses only in context (我叫…, 患者…,
  姓名：…, …医生, 病历号, My name is…, Mr./Dr. …, Patient: …, MRN, DOB, 住址, a street
  number and type), so drug and disease names that look like names (帕金森病, 华法林,
  Parkinson's disease, Graves' disease) are never touched;
- ages above `max_age` (89 by default, as HIPAA's Safe Harbor asks) are replaced; younger
  ages, doses, lab values, blood pressures, temperatures, ICD codes and durations never
  match any recognizer.

Only the value is replaced, never its context word ("病历号：[RECORD]"). In placeholder
mode each value becomes its type's placeholder (`PLACEHOLDERS`); in pseudonym mode the
same value becomes the same fake value, chosen by an HMAC-SHA256 of the value under a
secret salt, so no lookup table exists anywhere. The fake values are built so the detector
knows them as fakes (reserved ranges: example.com, 192.0.2.0/24, 555 area code, numbers
with a wrong check digit or an unassigned prefix, names from the pseudonym pools), so
checking a pseudonymized text finds no identifiers left.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

PLACEHOLDERS = {
    "name": "[NAME]",
    "phone": "[PHONE]",
    "id_number": "[ID]",
    "ssn": "[ID]",
    "email": "[EMAIL]",
    "url": "[URL]",
    "ip": "[IP]",
    "bank_card": "[CARD]",
    "address": "[ADDRESS]",
    "record_number": "[RECORD]",
    "birth_date": "[DOB]",
    "age_over_89": "[AGE]",
}
ENTITIES = tuple(PLACEHOLDERS)
MODES = ("placeholder", "pseudonym")

# which recognizer wins when two spans overlap (higher first), then the longer span
_PRIORITY = {"url": 9, "email": 9, "id_number": 8, "bank_card": 7, "ssn": 7, "ip": 7,
             "phone": 6, "record_number": 5, "birth_date": 5, "address": 4, "name": 3,
             "age_over_89": 2}


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    entity: str


# ---- validators ---------------------------------------------------------------------------
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
              46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _valid_date(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= _DAYS[month - 1] and 1880 <= year <= 2100


def resident_id_ok(value: str) -> bool:
    """A PRC resident ID: 18 characters (region, YYYYMMDD, sequence, ISO 7064 MOD 11-2 check
    digit) or the old 15-digit form (region, YYMMDD, sequence)."""
    v = value.upper()
    if len(v) == 18:
        if not v[:17].isdigit() or int(v[:2]) not in _PROVINCES:
            return False
        if not _valid_date(int(v[6:10]), int(v[10:12]), int(v[12:14])):
            return False
        total = sum(int(c) * w for c, w in zip(v[:17], _ID_WEIGHTS))
        return _ID_CHECK[total % 11] == v[17]
    if len(v) == 15 and v.isdigit():
        return int(v[:2]) in _PROVINCES and _valid_date(1900 + int(v[6:8]), int(v[8:10]),
                                                          int(v[10:12]))
    return False


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def bank_card_ok(digits: str) -> bool:
    """13-19 digits with a card issuer's prefix (UnionPay 62/60/9, Visa 4, Mastercard
    51-55/22-27, Amex 34/37, JCB 35, Discover 6011/65) and a valid Luhn sum."""
    n = len(digits)
    if not 13 <= n <= 19 or not luhn_ok(digits):
        return False
    if digits[0] == "4":
        return n in (13, 16, 19)
    two = int(digits[:2])
    if two in (34, 37):
        return n == 15
    if 51 <= two <= 55 or 22 <= two <= 27:
        return n == 16
    return two in (35, 60, 62, 65) and n >= 16


_CN_MOBILE = re.compile(r"1(?:3\d|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8\d|9[0-35-9])")


def ssn_ok(area: str, group: str, serial: str) -> bool:
    return (area not in ("000", "666") and area[0] != "9" and group != "00"
            and serial != "0000")


@lru_cache(maxsize=4096)
def phone_ok(number: str, region: str, valid: bool = True) -> bool:
    """A number that Google's phonenumbers metadata says is a valid number of `region`
    (assigned area codes and lengths; with `valid=False` only a possible one: the right
    length for the region), outside the reserved fictional 555 range."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    if not (phonenumbers.is_valid_number(parsed) if valid
            else phonenumbers.is_possible_number(parsed)):
        return False
    national = str(parsed.national_number)
    return not (parsed.country_code == 1 and (national[:3] == "555" or national[3:7] == "5550"
                                                 and national[7] == "1"))


def _ip_ok(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    doc4 = ipaddress.ip_network("192.0.2.0/24")
    doc6 = ipaddress.ip_network("2001:db8::/32")
    return ip not in (doc4 if ip.version == 4 else doc6)


_EXAMPLE_DOMAIN = re.compile(r"(?:^|[@.]|//)example\.(?:com|org|net)(?:$|[/:?#])", re.I)


# ---- patterns -----------------------------------------------------------------------------
_CJK = "\u4e00-\u9fff"
SURNAMES_1 = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵"
    "万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝"
    "包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤"
    "阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和"
    "仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝")
SURNAMES_2 = ("欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "尉迟", "公孙", "慕容",
              "长孙", "宇文", "司徒", "夏侯", "轩辕", "端木", "独孤", "南宫", "西门", "百里")
# characters that (almost) never stand in a given name but start or follow one in
# medical text: function words, numerals, body parts, symptoms, units, kinship words
_NOT_GIVEN = set(
    "的了是在有不也都就与或及因于被把从对向到说会能要可这那个们十百千万岁男女月"
    "日年天周次号病症痛疼热烧压咳嗽喘吐泻血尿便糖药医院科诊治疗查检术后前时出现感觉自述主诉今昨近"
    "既往无否认伴发头胸腹腰背手脚腿眼耳鼻口牙心肝脾肺肾胃肠皮肤骨关节炎癌瘤囊肿结石块某氏者属们性"
    "期次片粒针剂生师士夫护理该应需请问谢您你我他她它吗呢吧啊呀哦嗯么什怎为如果但而且并还又再很太"
    "最更已经曾将当烦候遵正常规带疸复度便显身节纯释法上下左右侧膏七西胆间祸续油部位内外中大小多少高低长"
    "短快慢好坏旧老幼儿童孕产妇患病人家里这边体重量温度数值率型级类种样份")
_BLOCK_NAMES = {"高血压", "高血糖", "高血脂", "黄疸", "高热", "常规", "华法林", "康复", "安静",
                "温度", "白带", "白细胞", "毛发", "谷丙", "甘油", "金黄色", "石膏", "龙胆",
                "车祸", "连续", "时间", "全身", "明显", "关节", "单纯", "解释", "包块", "管理",
                "方便", "方面", "于是", "应该", "成人", "马上", "宁可", "蒙脱石", "游离",
                "叶酸", "钟点", "柴胡", "党参", "甘草", "黄芪", "黄连", "白术", "桂枝", "田七",
                "杜仲", "麦冬", "苏打", "甄别", "和缓", "米粥", "沙丁胺醇", "雷贝拉唑", "司机"}
_SURNAMES_2 = set(SURNAMES_2)
_BLOCK_PREFIXES = {b[:k] for b in _BLOCK_NAMES for k in range(2, len(b) + 1)}
_ZH_NAME_TRIGGER = re.compile(
    r"(?:我叫|我的名字是|我的名字叫|名字叫|本人叫|我姓名是|姓名[:：为是]?\s*|联系人[:：]?\s*|"
    r"(?:患者|病人|患儿|病员)(?:姓名)?[:：]?\s*|(?:主治|经治|主管)?(?:医师|医生|大夫|护士)[:：]\s*)")
# what may follow a name: punctuation, space, the end, or a word that starts a clause
_AFTER_NAME = re.compile(
    r"(?:$|[\s，,。.；;、:：!！?？()（）\"“”'‘’]|男|女|先生|女士|同志|今年|今天|现年|因|于|在|是|"
    r"的|自|从|主诉|入院|来院|就诊|，|年龄|性别|身份证|手机|电话|住|家住)")
_STRONG_AFTER = set("，,。；;、:：(（男女")
_BEFORE_TITLE = ("谢谢", "感谢", "多谢", "请问", "是", "找", "问", "请", "叫", "给", "让", "被",
                 "和", "跟", "与", "挂", "约", "找的", "的", "您好", "你好")
_ZH_TITLE = re.compile(r"(?=(?:医生|医师|大夫|护士|主任|教授|院长|先生|女士))")
_EN_TITLE = re.compile(
    r"(?:\b(?:[Mm]y name is|[Mm]y name's|I am called|[Pp]atient name|[Nn]ame)\s*:?\s+|"
    r"\b(?:Patient|PATIENT|Pt)\s*:\s*|\b(?:Mr|Mrs|Ms|Mx|Dr|Miss|Prof)\.?\s+|"
    r"\b(?:Doctor|Nurse)\s+)")
_EN_WORD = r"[A-Z][a-z]+(?:['-][A-Z][a-z]+)?"
_EN_NAME = re.compile(rf"({_EN_WORD})(?:(\s+[A-Z]\.)?(\s+{_EN_WORD}))?")
_EN_NOT_NAME = set(
    "The A An This That These Those He She It They We You I Male Female Man Woman Boy Girl "
    "Unknown None No Not Yes Patient Doctor Nurse Presents Presented Denies Reports History "
    "Admitted Age Is Was Has Had And Or Of In On At For With Without To From By Chief "
    "Complaint Diagnosis Name Date Mr Mrs Ms Dr Hello Hi Dear Thanks Thank Please Good "
    "Healthy Adult Child Infant Elderly Smith's".split())

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
                    r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])")
_URL = re.compile(r"(?:(?<![A-Za-z0-9])(?:https?|ftp)://|(?<![A-Za-z0-9.])www\.)[^\s<>\"'，。；、！？）】《》\u3000"
                  + _CJK + r"]+", re.I)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Za-z:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
_ID18 = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")
_CARD = re.compile(r"(?<![0-9A-Za-z-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![0-9A-Za-z-])"
                   r"|(?<![0-9A-Za-z-])\d{13,19}(?![0-9A-Za-z-])")
_MOBILE = re.compile(r"(?<![0-9A-Za-z+-])(?:(?:\+|00)86[\s-]?)?(1\d{2})[\s-]?(\d{4})[\s-]?(\d{4})"
                     r"(?![0-9A-Za-z])")
_LANDLINE = re.compile(r"(?<![0-9A-Za-z+-])(?:(?:\+|00)86[\s-]?)?(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3})"
                       r"[\s-]?\d{3,4}[\s-]?\d{4}(?:(?:转|-|ext\.?\s?)\d{1,5})?(?![0-9A-Za-z])")
_US_PHONE = re.compile(r"(?<![0-9A-Za-z+-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
                       r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![0-9A-Za-z])")
_PHONE_CONTEXT = re.compile(r"(?:电话|手机|联系方式|联系电话|座机|微信|tel|phone|cell|mobile|call)"
                            r"[^\d\n(（]{0,6}((?:\+|[(（])?\d[\d\s()（）-]{6,16}\d)(?![0-9A-Za-z])", re.I)
_SSN = re.compile(r"(?<![0-9A-Za-z-])(\d{3})([- ])(\d{2})\2(\d{4})(?![0-9A-Za-z-])")
_SSN_CONTEXT = re.compile(r"(?:SSN|[Ss]ocial [Ss]ecurity(?: [Nn]umber| [Nn]o\.?)?)\D{0,6}"
                          r"(\d{9})(?!\d)")
_RECORD = re.compile(
    r"(?:病历号|病案号|住院号|门诊号|就诊卡号|就诊号|医保卡号|登记号|ID号|"
    r"\bMRN|\b[Mm]edical [Rr]ecord (?:[Nn]umber|[Nn]o\.?|#)|\b[Rr]ecord (?:[Nn]umber|[Nn]o\.?|#)|"
    r"\b[Cc]hart (?:[Nn]umber|[Nn]o\.?|#)|\b[Pp]atient ID|\b[Cc]hart)"
    r"\s*(?:[:：#]|is|为|是)?\s*(?:[:：#])?\s*([A-Za-z]{0,3}-?\d[\dA-Za-z-]{3,19})(?![\w-])")
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|"
           "December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_DATE = (r"(\d{4}年\d{1,2}月(?:\d{1,2}[日号])?|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|"
         r"\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|(?:" + _MONTHS + r")\.? \d{1,2},? \d{4}|"
         r"\d{1,2} (?:" + _MONTHS + r")\.? \d{4})")
_DOB = re.compile(r"(?:出生日期|出生年月日|出生年月|生日|出生于|出生在|生于|"
                  r"\bDOB|\bD\.O\.B\.?|\b[Dd]ate of [Bb]irth|\b[Bb]irth ?[Dd]ate|\b[Bb]orn(?: on)?)"
                  r"\s*(?:[:：]|是|为|is|was)?\s*" + _DATE)
_AGE = re.compile(r"(?<![\d.])(\d{2,3})(?=\s*(?:岁|周岁)|[- ](?:years?|yrs?)[- ]old\b)"
                  r"|\b[Aa]ged?:?\s+(\d{2,3})\b")
_PROVINCE_NAMES = ("北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|"
                   "湖北|湖南|广东|海南|四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|"
                   "香港|澳门")
_ZH_ADDR = re.compile(
    r"(?:(?:" + _PROVINCE_NAMES + r")(?:省|市|自治区|壮族自治区|回族自治区|维吾尔自治区|特别行政区)?"
    r"|(?<=住址)|(?<=地址)|(?<=家住)|(?<=住在)|(?<=现住)|(?<=居住在)|(?<=居住于)|(?<=住址：)"
    r"|(?<=地址：)|(?<=住址:)|(?<=地址:))"
    r"(?:[" + _CJK + r"]{1,8}?(?:市|州|盟))?(?:[" + _CJK + r"]{1,8}?(?:区|县|旗))?"
    r"(?:[" + _CJK + r"]{1,8}?(?:镇|乡|街道))?"
    r"(?:[" + _CJK + r"\d]{1,10}(?:路|街|大道|巷|胡同|弄|村|小区|花园|公寓|大厦))"
    r"(?:[\d一二三四五六七八九十]+(?:号|弄|巷|栋|幢|号楼|单元|楼|层|室|组))*"
    r"(?:[\dA-Za-z]+(?:室|号)?)?")
_ZH_STREET = re.compile(
    r"[" + _CJK + r"]{2,4}(?:路|街|大道|巷|胡同)\d{1,5}号"
    r"(?:[\d一二三四五六七八九十]+(?:弄|栋|幢|号楼|单元|楼|层|室))*(?:\d+室?)?")
_EN_ADDR = re.compile(
    r"\b\d{1,5}\s+(?:[NSEW]\.?\s+)?(?:[A-Z][a-z]+\s+){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    r"Terrace|Parkway|Pkwy|Circle|Cir|Highway|Hwy)\b\.?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*#?\w+)?"
    r"(?:,\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?)?")
_LEAD_TRIM = "在住于到往是为:：，, "
# cheap keyword gates: a context pattern runs only on texts holding one of its words
_DIGIT = re.compile(r"\d")
_HAS_CJK = re.compile("[" + _CJK + "]")
_HAS_LATIN = re.compile("[A-Za-z]")
_PHONE_WORDS = ("电话", "手机", "联系", "座机", "微信", "tel", "phone", "cell", "mobile", "call")
_RECORD_WORDS = ("号", "mrn", "record", "chart", "patient id")
_DOB_WORDS = ("出生", "生日", "生于", "dob", "d.o.b", "birth", "born")
_AGE_WORDS = ("岁", "year", "yr", "age")


def _keyword(low: str, words: tuple[str, ...]) -> bool:
    return any(w in low for w in words)


def _is_zh_name(name: str) -> bool:
    """Whether `name` is a whole Chinese name: a surname, then 1-2 given characters."""
    slen = 2 if name[:2] in _SURNAMES_2 else 1 if name[:1] in SURNAMES_1 else 0
    given = name[slen:]
    if not slen or not 1 <= len(given) <= 2:
        return False
    if not all("\u4e00" <= c <= "\u9fff" and c not in _NOT_GIVEN for c in given):
        return False
    return not (name in _BLOCK_PREFIXES or any(name[:k] in _BLOCK_NAMES
                                               for k in range(2, len(name))))


# given-name characters that are also common words (小时, 小便): taken only right after
# an explicit name trigger (我叫王小明, 患者：李小红), never before a title
_GIVEN_AFTER_TRIGGER = set("小")


def _zh_name_at(text: str, i: int, trailing: bool = True, trigger: bool = False) -> int:
    """End of a Chinese name (surname, then 1-2 given characters) starting at i, or -1.
    With `trailing`, the name must be followed by what may follow a name; after a
    `trigger` (我叫, 患者：) a given name may hold a character such as 小."""
    if text[i:i + 2] in _SURNAMES_2:
        slen = 2
    elif i < len(text) and text[i] in SURNAMES_1:
        slen = 1
    else:
        return -1
    for given in (2, 1):
        end = i + slen + given
        if end > len(text):
            continue
        chars = text[i + slen:end]
        if not all("\u4e00" <= c <= "\u9fff" and (c not in _NOT_GIVEN or trigger
                                                    and c in _GIVEN_AFTER_TRIGGER)
                   for c in chars):
            continue
        name = text[i:end]
        if name in _BLOCK_PREFIXES or any(name[:k] in _BLOCK_NAMES
                                          for k in range(2, len(name))):
            continue  # a word such as 高血压 or 黄疸, or the start of one
        if not trailing or _AFTER_NAME.match(text, end):
            return end
    return -1


# ---- the detector -------------------------------------------------------------------------
NAME_POOL_ZH = tuple(s + g for s in "甲乙丙丁" for g in ("一", "二", "三", "四", "五", "六"))
NAME_POOL_EN = tuple(f"{a} {b}" for a in ("Alex", "Jordan", "Casey", "Riley", "Morgan", "Taylor")
                     for b in ("Placeholder", "Sample", "Example", "Pseudo"))
_POOL = set(NAME_POOL_ZH) | set(NAME_POOL_EN) | {n.split()[0] for n in NAME_POOL_EN} \
    | {n.split()[1] for n in NAME_POOL_EN}


class Detector:
    """Every recognizer of both languages; `find(text)` returns non-overlapping findings in
    text order. `entities` limits what is looked for; `max_age` keeps ages up to it."""

    def __init__(self, entities: tuple[str, ...] = ENTITIES, max_age: int = 89):
        unknown = [e for e in entities if e not in PLACEHOLDERS]
        if unknown:
            raise ValueError(f"unknown entity type(s) {unknown}; known: {', '.join(ENTITIES)}")
        self.entities = set(entities)
        self.max_age = max_age

    def find(self, text: str) -> list[Finding]:
        if not text:
            return []
        found: list[Finding] = []
        add = found.append
        want = self.entities
        has_digit = _DIGIT.search(text) is not None
        has_cjk = _HAS_CJK.search(text) is not None
        low = text.lower()
        if "@" in text and "email" in want:
            for m in _EMAIL.finditer(text):
                if not _EXAMPLE_DOMAIN.search(m.group()):
                    add(Finding(m.start(), m.end(), "email"))
        if "url" in want and ("://" in text or "www." in low):
            for m in _URL.finditer(text):
                end = m.end()
                while end > m.start() and text[end - 1] in ".,;:!?)]}'\"":
                    end -= 1
                if not _EXAMPLE_DOMAIN.search(text[m.start():end]):
                    add(Finding(m.start(), end, "url"))
        if has_digit:
            self._numbers(text, low, add)
        if "name" in want:
            self._names(text, has_cjk, add)
        if "address" in want and (has_digit or "住" in text or "地址" in text):
            self._addresses(text, has_cjk, add)
        return _resolve(found)

    def _numbers(self, text: str, low: str, add) -> None:
        want = self.entities
        if "ip" in want:
            if "." in text:
                for m in _IPV4.finditer(text):
                    if _ip_ok(m.group()):
                        add(Finding(m.start(), m.end(), "ip"))
            if "::" in text or text.count(":") >= 3:
                for m in _IPV6.finditer(text):
                    if ":" in m.group() and _ip_ok(m.group()):
                        add(Finding(m.start(), m.end(), "ip"))
        if "id_number" in want:
            for m in _ID18.finditer(text):
                if resident_id_ok(m.group(1)):
                    add(Finding(m.start(1), m.end(1), "id_number"))
        if "bank_card" in want:
            for m in _CARD.finditer(text):
                digits = re.sub(r"[ -]", "", m.group())
                if bank_card_ok(digits):
                    add(Finding(m.start(), m.end(), "bank_card"))
        if "phone" in want:
            for m in _MOBILE.finditer(text):
                if _CN_MOBILE.fullmatch(m.group(1)):
                    add(Finding(m.start(), m.end(), "phone"))
            for m in _LANDLINE.finditer(text):
                number = m.group().split("转")[0].split("ext")[0]
                # a bare digit run must be a valid number; one written with its area code set
                # apart ("0351-8745 4882", "(0351)87454882") only a possible one
                spaced = bool(re.match(r"(?:(?:\+|00)86[\s-]?)?(?:[(（]|0\d{2,3}[\s-])", number))
                if phone_ok(re.sub(r"[^\d+]", "", number), "CN", not spaced):
                    add(Finding(m.start(), m.end(), "phone"))
            for m in _US_PHONE.finditer(text):
                if phone_ok(m.group(), "US"):
                    add(Finding(m.start(), m.end(), "phone"))
            for m in _PHONE_CONTEXT.finditer(text) if _keyword(low, _PHONE_WORDS) else ():
                number = m.group(1)
                digits = re.sub(r"\D", "", number)
                if 7 <= len(digits) <= 15 and not (digits.startswith("100") and len(digits) == 11):
                    if not (len(digits) == 10 and digits.startswith("555")):
                        add(Finding(m.start(1), m.end(1), "phone"))
        if "ssn" in want:
            for m in _SSN.finditer(text):
                if ssn_ok(m.group(1), m.group(3), m.group(4)):
                    add(Finding(m.start(), m.end(), "ssn"))
            for m in _SSN_CONTEXT.finditer(text) if ("ssn" in low or "social" in low) else ():
                v = m.group(1)
                if ssn_ok(v[:3], v[3:5], v[5:]):
                    add(Finding(m.start(1), m.end(1), "ssn"))
        if "record_number" in want:
            for m in _RECORD.finditer(text) if _keyword(low, _RECORD_WORDS) else ():
                if not m.group(1).upper().startswith("ZZ"):
                    add(Finding(m.start(1), m.end(1), "record_number"))
        if "birth_date" in want:
            for m in _DOB.finditer(text) if _keyword(low, _DOB_WORDS) else ():
                add(Finding(m.start(1), m.end(1), "birth_date"))
        if "age_over_89" in want:
            for m in _AGE.finditer(text) if _keyword(low, _AGE_WORDS) else ():
                g = 1 if m.group(1) else 2
                if self.max_age < int(m.group(g)) <= 130:
                    add(Finding(m.start(g), m.end(g), "age_over_89"))

    def _names(self, text: str, has_cjk: bool, add) -> None:
        if has_cjk:
            for m in _ZH_NAME_TRIGGER.finditer(text):
                end = _zh_name_at(text, m.end(), trigger=True)
                if end > 0 and m.group()[0] in "患病" and m.start() > 0 \
                        and "\u4e00" <= text[m.start() - 1] <= "\u9fff" \
                        and text[m.start() - 1] not in "本该位名例此" \
                        and not (end == len(text) or text[end] in _STRONG_AFTER):
                    continue  # 癫痫患者应当…: a kind of patient, not a patient's name
                if end > 0 and text[m.end():end] not in _POOL:
                    add(Finding(m.end(), end, "name"))
            for m in _ZH_TITLE.finditer(text):
                t = m.start()
                for size in (4, 3, 2, 1):
                    s = t - size
                    if s < 0:
                        continue
                    if not _is_zh_name(text[s:t]):  # a name that ends at the title
                        continue
                    before = text[max(0, s - 2):s]
                    if s == 0 or not ("\u4e00" <= text[s - 1] <= "\u9fff") \
                            or any(before.endswith(b) for b in _BEFORE_TITLE):
                        if text[s:t] not in _POOL:
                            add(Finding(s, t, "name"))
                        break
                else:
                    # a surname alone: 王医生, 谢谢李大夫
                    s = t - 1
                    if s >= 0 and text[s] in SURNAMES_1:
                        before = text[max(0, s - 2):s]
                        if s == 0 or not ("\u4e00" <= text[s - 1] <= "\u9fff") \
                                or any(before.endswith(b) for b in _BEFORE_TITLE):
                            add(Finding(s, t, "name"))
        if _HAS_LATIN.search(text):
            for m in _EN_TITLE.finditer(text):
                n = _EN_NAME.match(text, m.end())
                if not n or n.group(1) in _EN_NOT_NAME:
                    continue
                end = n.end()
                if n.group(3) and n.group(3).strip() in _EN_NOT_NAME:
                    end = n.end(1)
                value = text[n.start():end]
                if value in _POOL or value.split()[0] in _POOL:
                    continue
                add(Finding(n.start(), end, "name"))

    def _addresses(self, text: str, has_cjk: bool, add) -> None:
        for pattern in (_ZH_ADDR, _ZH_STREET) if has_cjk else ():
            for m in pattern.finditer(text):
                s, e = m.start(), m.end()
                while s < e and text[s] in _LEAD_TRIM:
                    s += 1
                value = text[s:e]
                if "示例" in value or e - s < 4:
                    continue
                add(Finding(s, e, "address"))
        if _HAS_LATIN.search(text):
            for m in _EN_ADDR.finditer(text):
                if "Example" not in m.group():
                    add(Finding(m.start(), m.end(), "address"))


def _resolve(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings: the higher-priority type wins, then the longer span."""
    if len(found) < 2:
        return found
    ranked = sorted(found, key=lambda f: (-_PRIORITY[f.entity], f.start - f.end, f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept


# ---- replacement --------------------------------------------------------------------------


class Redactor:
    """Replaces what a `Detector` finds: `placeholder` mode writes the type's placeholder,
    `pseudonym` mode a fake value chosen by HMAC-SHA256(salt, type + value), the same fake
    for the same value wherever it appears. The salt is never stored."""

    def __init__(self, detector: Detector, mode: str = "placeholder", salt: bytes = b""):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "pseudonym" and len(salt) < 16:
            raise ValueError("pseudonym mode needs a secret salt of at least 16 bytes")
        self.detector = detector
        self.mode = mode
        self._salt = salt

    def __getstate__(self):  # the salt never travels in a pickle
        raise TypeError("a Redactor holds a secret salt; build it in the worker")

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """The text with every finding replaced, and the findings counted by type."""
        return self.apply(text, self.detector.find(text))

    def apply(self, text: str, findings: list[Finding]) -> tuple[str, Counter[str]]:
        """The text with `findings` (from `detector.find(text)`) replaced."""
        counts: Counter[str] = Counter()
        if not findings:
            return text, counts
        parts = []
        at = 0
        for f in findings:
            parts.append(text[at:f.start])
            parts.append(self.replacement(f.entity, text[f.start:f.end]))
            counts[f.entity] += 1
            at = f.end
        parts.append(text[at:])
        return "".join(parts), counts

    def replacement(self, entity: str, value: str) -> str:
        if self.mode == "placeholder":
            return PLACEHOLDERS[entity]
        return pseudonym(entity, value, self._salt)


def _digest(salt: bytes, entity: str, value: str) -> int:
    key = re.sub(r"[\s()（）-]", "", value) if entity in ("phone", "bank_card", "ssn") else value
    return int.from_bytes(hmac.new(salt, f"{entity}\0{key}".encode(), hashlib.sha256).digest()[:8],
                          "big")


def pseudonym(entity: str, value: str, salt: bytes) -> str:
    """The fake value of `value`: the same for the same (salt, entity, value), built so the
    `Detector` recognizes it as fake (see the module docstring)."""
    h = _digest(salt, entity, value)
    digits = f"{h:020d}"
    zh = bool(re.search("[" + _CJK + "]", value))
    if entity == "name":
        if zh:
            return NAME_POOL_ZH[h % len(NAME_POOL_ZH)]
        if " " not in value.strip():
            return NAME_POOL_EN[h % len(NAME_POOL_EN)].split()[1]
        return NAME_POOL_EN[h % len(NAME_POOL_EN)]
    if entity == "phone":
        if re.search(r"\+?86|^1\d|^0\d", value.strip()) and not value.strip().startswith("+1"):
            return "100" + digits[:8]  # 100 is no Chinese mobile prefix
        return f"(555) 555-01{digits[:2]}"  # the 555 area code is not assigned
    if entity == "id_number":
        if len(value) != 18:
            return "110101000000" + digits[:3]  # month 00: no valid date
        body = "11010119000101" + digits[:3]
        right = _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS)) % 11]
        return body + ("0" if right != "0" else "1")  # a wrong check digit
    if entity == "ssn":
        return f"900-{digits[:2]}-{digits[2:6]}"  # 9xx is never an SSN area
    if entity == "email":
        return f"user{h % 10**8:08d}@example.com"
    if entity == "url":
        return f"https://example.com/{h % 16**8:08x}"
    if entity == "ip":
        return f"2001:db8::{h % 65536:x}" if ":" in value else f"192.0.2.{h % 254 + 1}"
    if entity == "bank_card":
        body = "62" + digits[:13]
        for last in "0123456789":
            if not luhn_ok(body + last):
                return body + last
    if entity == "address":
        if zh:
            return f"示例路{h % 999 + 1}号"
        return f"{h % 999 + 1} Example Street"
    if entity == "record_number":
        return f"ZZ{digits[:8]}"
    if entity == "birth_date":
        year = re.match(r"\d{4}", value) or re.search(r"\d{4}$", value.strip())
        if year:
            return year.group() + ("年" if "年" in value else "")
        return PLACEHOLDERS[entity]
    if entity == "age_over_89":
        return "90+"
    return PLACEHOLDERS[entity]


def example(text: str, findings: list[Finding], around: int = 24) -> str:
    """A short snippet of `text` around its first finding, with every finding in the snippet
    replaced by its placeholder: safe to show in a report."""
    first = findings[0]
    lo, hi = max(0, first.start - around), min(len(text), first.end + around)
    parts, at = [], lo
    for f in findings:
        if f.end <= lo or f.start >= hi:
            continue
        s, e = max(f.start, lo), min(f.end, hi)
        parts.append(text[at:s])
        parts.append(PLACEHOLDERS[f.entity])
        at = e
    parts.append(text[at:hi])
    return ("…" if lo else "") + "".join(parts) + ("…" if hi < len(text) else "")


# ---- what is left in a version ---------------------------------------------------------
def deid_settings(manifest: dict) -> dict | None:
    """The settings of a version's `deidentify` stage (from the recipe's `curate:` list, as
    the manifest records it), or None when it has no such stage."""
    stages = [s for s in manifest.get("stages", []) if s.get("stage") == "deidentify"]
    if not stages:
        return None
    curate = (manifest.get("recipe") or {}).get("curate") or []
    for entry in curate if isinstance(curate, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("deidentify"), dict):
            return entry["deidentify"]
    return stages[0].get("settings") or {}


def scan_version(version, detector: Detector, examples: int = 5) -> tuple[Counter[str], int, list]:
    """(findings by entity type, rows with a finding, the first few such rows' ids) over
    every text of a published canonical version (question, context, answer, rationale,
    response, options, turns), batch by batch."""
    counts: Counter[str] = Counter()
    rows = 0
    ids: list[str] = []
    from meddata.steps.text import texts

    for batch in version.iter_batches(verify="none"):
        flagged = set()
        found_texts = texts(batch)  # the texts the deidentify step edits
        for i, text in zip(found_texts.rows.tolist(), found_texts.values):
            found = detector.find(text)
            if found:
                flagged.add(i)
                counts.update(f.entity for f in found)
        rows += len(flagged)
        if flagged and len(ids) < examples and "id" in batch.schema.names:
            column = batch.column("id")
            ids += [column[i].as_py() for i in sorted(flagged)[:examples - len(ids)]]
    return counts, rows, ids
