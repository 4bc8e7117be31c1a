"""De-identification: precision, recall and speed of meddata, Presidio and Data-Juicer.

    flock /tmp/meddata-bench.lock python benchmarks/deid_bench.py [--rows 2400] [--seed 0]
        [--memory-rows 20000]

Needs the `deid-bench` extra (`pip install -e ".[deid-bench]"`: presidio-analyzer,
presidio-anonymizer, py-data-juicer; py-data-juicer 1.6 pins dill 0.3.8 and multiprocess
0.70.16, so a separate virtual environment may suit); `--skip presidio` / `--skip dj`
leave a tool out.

Generates a labeled set (`--rows` rows, half Chinese, half English): each row holds one or
two identifiers of every entity type the `deidentify` step knows, written into the
sentences patients and doctors write, next to one or two clinical negatives (doses, lab
values, blood pressures, temperatures, ICD codes, durations, ages up to 89, drug and disease
names that look like names); some rows hold negatives only. Every span is labeled.

Then, on the same texts, back to back:
- meddata: `meddata.deid.Redactor` in placeholder mode (find and replace);
- Presidio: `presidio-analyzer`'s default recognizers for English with the NoOp NLP engine
  (no spaCy model can be installed offline, so its spaCy PERSON recognizer finds nothing),
  then `presidio-anonymizer`;
- Data-Juicer: its regex mappers clean_email_mapper, clean_ip_mapper, clean_links_mapper.
A prediction is right when it overlaps a labeled span of the same type. Printed: precision
and recall per language and entity type (`-` where a tool has no recognizer for the type),
the clinical negatives each tool changed, and rows/s. Last, meddata's peak RSS streaming
`--memory-rows` and 5x as many rows through the redactor in batches, each in a fresh
process.
"""

from __future__ import annotations

import argparse
import difflib
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import measure  # noqa: E402

# ---- values -------------------------------------------------------------------------------
ZH_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔汤"
ZH_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华玉兰建国文辉鹏宇浩婷雪琳晨欣怡俊峰斌凯丹萍红燕鑫晶梅莉颖蕾倩志海波林春亮飞宁振宏"
EN_FIRST = ("James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David "
            "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy "
            "Matthew Lisa Anthony Betty Mark Sandra Steven Ashley Paul Emily Andrew Donna").split()
EN_LAST = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
           "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
           "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
           "Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell").split()
REGIONS = ("110105", "110108", "310104", "310115", "440305", "440106", "510107", "330106",
           "420106", "320102", "370202", "610113", "500103", "210102", "350203")
MOBILE_PREFIX = ("130 131 132 133 134 135 136 137 138 139 147 150 151 152 153 155 156 157 158 "
                 "159 166 170 173 175 176 177 178 180 181 182 183 184 185 186 187 188 189 191 "
                 "198 199").split()
AREA_CODES = ("010", "021", "020", "022", "023", "024", "025", "027", "028", "029", "0755",
              "0571", "0531", "0532", "0512", "0731", "0871", "0351", "0591", "0371")
US_AREAS = ("212", "415", "617", "312", "713", "206", "303", "404", "305", "503", "602", "214")
EMAIL_DOMAINS = ("163.com", "qq.com", "gmail.com", "outlook.com", "126.com", "yahoo.com",
                 "hospital.org.cn", "sina.com")
PROVINCES = (("浙江省", "杭州市", "西湖区"), ("广东省", "深圳市", "南山区"), ("四川省", "成都市", "武侯区"),
             ("湖北省", "武汉市", "洪山区"), ("北京市", "", "海淀区"), ("上海市", "", "浦东新区"),
             ("江苏省", "南京市", "鼓楼区"), ("山东省", "青岛市", "市南区"))
ROADS = ("文三路", "科技园南路", "人民南路", "中山大道", "学院路", "张江路", "建国路", "解放路", "和平街", "长江路")
EN_STREETS = ("Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park",
              "Lincoln", "Sunset", "River")
EN_STREET_TYPES = ("Street", "St.", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Lane", "Drive")
CITIES = (("Springfield", "IL", "62704"), ("Boston", "MA", "02118"), ("Austin", "TX", "78701"),
          ("Seattle", "WA", "98104"), ("Denver", "CO", "80203"))
MONTHS = ("January February March April May June July August September October November "
          "December").split()


def luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def values(rng: random.Random) -> dict:
    """One generator per (language, entity): each returns one realistic value."""
    def zh_name():
        return rng.choice(ZH_SURNAMES) + "".join(rng.choice(ZH_GIVEN)
                                                   for _ in range(rng.choice((1, 2, 2))))

    def en_name(full=True):
        return f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}" if full else rng.choice(EN_LAST)

    def resident_id():
        year = rng.randint(1935, 2012)
        date = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        if rng.random() < 0.15:
            return rng.choice(REGIONS) + date[2:] + f"{rng.randint(0, 999):03d}"
        body = rng.choice(REGIONS) + date + f"{rng.randint(0, 999):03d}"
        weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
        return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]

    def mobile():
        p, a, b = rng.choice(MOBILE_PREFIX), f"{rng.randint(0, 9999):04d}", f"{rng.randint(0, 9999):04d}"
        return rng.choice((f"{p}{a}{b}", f"{p} {a} {b}", f"{p}-{a}-{b}", f"+86 {p}{a}{b}",
                           f"+86-{p}-{a}-{b}", f"+86{p}{a}{b}"))

    def landline():
        area = rng.choice(AREA_CODES)
        local = str(rng.randint(2, 8)) + f"{rng.randint(0, 9999999):07d}"
        return rng.choice((f"{area}-{local}", f"({area}){local}", f"{area} {local[:4]} {local[4:]}",
                           f"{area}-{local}转{rng.randint(100, 899)}"))

    def us_phone():
        area, ex, line = rng.choice(US_AREAS), rng.randint(200, 999), f"{rng.randint(0, 9999):04d}"
        if ex == 555:
            ex = 556
        return rng.choice((f"({area}) {ex}-{line}", f"{area}-{ex}-{line}", f"+1 {area}.{ex}.{line}",
                           f"{area}.{ex}.{line}", f"1-{area}-{ex}-{line}"))

    def email():
        user = rng.choice(("zhang", "li.ming", "wang_fang", "jsmith", "mary.j", "dr.chen", "pt"))
        return f"{user}{rng.randint(1, 9999)}@{rng.choice(EMAIL_DOMAINS)}"

    def url():
        return rng.choice((f"https://www.haodf.com/doctor/{rng.randint(10000, 99999)}.html",
                           f"http://weibo.com/u/{rng.randint(10**9, 10**10)}",
                           f"https://www.facebook.com/profile.php?id={rng.randint(10**6, 10**9)}",
                           f"www.myblog{rng.randint(1, 999)}.net/posts/{rng.randint(1, 999)}"))

    def ip():
        if rng.random() < 0.15:
            return f"fe80::{rng.randint(1, 65535):x}:{rng.randint(1, 65535):x}"
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))

    def card():
        if rng.random() < 0.6:
            body = "62" + "".join(str(rng.randint(0, 9)) for _ in range(rng.choice((13, 16))))
        else:
            body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
        number = body + luhn_digit(body)
        if len(number) == 16 and rng.random() < 0.4:
            return " ".join(number[i:i + 4] for i in range(0, 16, 4))
        return number

    def ssn():
        area = rng.randint(1, 899)
        area = 667 if area == 666 else area
        return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"

    def zh_address():
        prov, city, dist = rng.choice(PROVINCES)
        tail = f"{rng.randint(1, 999)}号"
        if rng.random() < 0.6:
            tail += f"{rng.randint(1, 20)}栋{rng.randint(1, 30)}0{rng.randint(1, 9)}室"
        return prov + city + dist + rng.choice(ROADS) + tail

    def en_address():
        s = f"{rng.randint(1, 9999)} {rng.choice(EN_STREETS)} {rng.choice(EN_STREET_TYPES)}"
        if rng.random() < 0.4:
            s += f", Apt {rng.randint(1, 30)}{rng.choice('ABCD')}"
        if rng.random() < 0.5:
            city, st, zp = rng.choice(CITIES)
            s += f", {city}, {st} {zp}"
        return s

    def record():
        return rng.choice((f"ZY{rng.randint(2015, 2024)}{rng.randint(0, 99999):05d}",
                           f"{rng.randint(100000, 9999999)}", f"MZ{rng.randint(10**6, 10**8)}"))

    def en_record():
        return rng.choice((f"{rng.randint(100000, 99999999):08d}", f"A-{rng.randint(10000, 999999)}",
                           f"MR{rng.randint(10**5, 10**7)}"))

    def zh_dob():
        y, m, d = rng.randint(1935, 2015), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice((f"{y}年{m}月{d}日", f"{y}-{m:02d}-{d:02d}", f"{y}年{m}月"))

    def en_dob():
        y, m, d = rng.randint(1935, 2015), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice((f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{MONTHS[m - 1]} {d}, {y}",
                           f"{d} {MONTHS[m - 1]} {y}"))

    def old_age():
        return str(rng.randint(90, 104))

    return {"zh": {"name": zh_name, "id_number": resident_id, "phone": lambda: rng.choice(
        (mobile, mobile, landline))(), "email": email, "url": url, "ip": ip, "bank_card": card,
        "address": zh_address, "record_number": record, "birth_date": zh_dob,
        "age_over_89": old_age, "name_no_context": zh_name},
        "en": {"name": en_name, "ssn": ssn, "phone": us_phone, "email": email, "url": url,
               "ip": ip, "bank_card": card, "address": en_address, "record_number": en_record,
               "birth_date": en_dob, "age_over_89": old_age, "name_no_context": en_name}}


TEMPLATES = {
    "zh": {
        "name": ["我叫{v}，最近总是头晕乏力。", "患者{v}，男，56岁，因胸痛2小时入院。", "姓名：{v}",
                 "{v}医生您好，我想咨询一下孩子咳嗽的问题。", "谢谢{v}医生的耐心解答！", "患者：{v}，女。",
                 "我是患者家属，患者{v}，今年住院了。", "本人叫{v}，想问一下。"],
        "id_number": ["身份证号：{v}", "我的身份证号码是{v}，请帮忙查一下报告。", "证件号{v}。"],
        "phone": ["我的手机号{v}，方便的话请联系我。", "联系电话：{v}", "有问题打{v}找我。"],
        "email": ["请把报告发到{v}，谢谢。", "邮箱：{v}"],
        "url": ["我在{v}上看到的这个方子。", "参考链接：{v}"],
        "ip": ["登录IP：{v}", "服务器地址{v}无法访问。"],
        "bank_card": ["退款请打到银行卡{v}。", "卡号：{v}"],
        "address": ["家住{v}，离医院很远。", "地址：{v}", "我住在{v}，附近有什么医院？"],
        "record_number": ["住院号：{v}", "病历号{v}，请调阅。", "门诊号：{v}", "就诊卡号是{v}。"],
        "birth_date": ["出生日期：{v}", "我生日是{v}，属什么？", "患儿出生于{v}。"],
        "age_over_89": ["老人今年{v}岁，", "患者{v}周岁，"],
        # out of the rules' reach on purpose (no context word; only NER could see them):
        # reported on their own line, so the table shows the limit
        "name_no_context": ["{v}说他头痛三天了。", "昨天和{v}一起去的医院。"],
    },
    "en": {
        "name": ["My name is {v}, and I have had headaches for a week.", "Patient: {v}, admitted for chest pain.",
                 "Mr. {v} reports fatigue.", "Dr. {v} recommended rest.", "Mrs. {v} is here for follow-up."],
        "ssn": ["SSN {v} on file.", "Her social security number is {v}."],
        "phone": ["Call me at {v} any time.", "Phone: {v}", "The clinic can reach me on {v}."],
        "email": ["Email me at {v} please.", "Contact: {v}"],
        "url": ["I read about it at {v} yesterday.", "See {v} for my records."],
        "ip": ["Login from IP {v} was blocked.", "Host {v} is down."],
        "bank_card": ["Charge card {v} for the copay.", "Card number {v}."],
        "address": ["I live at {v}.", "Address: {v}."],
        "record_number": ["MRN: {v}", "Medical record number {v} was updated.", "Chart # {v} reviewed."],
        "birth_date": ["DOB: {v}.", "Date of birth: {v}.", "She was born on {v}."],
        "age_over_89": ["A {v}-year-old woman presents with confusion.", "He is {v} years old."],
        "name_no_context": ["{v} has had a fever since Monday.", "I went with {v} to the ER."],
    },
}
NEGATIVES = {
    "zh": ["血压150/95mmHg", "体温38.5℃", "阿莫西林0.5g，每日3次", "空腹血糖7.8mmol/L",
           "白细胞计数12.5×10^9/L", "ICD-10编码I10", "病程3年", "患者65岁", "帕金森病多年",
           "华法林3mg口服", "服用二甲双胍500mg", "心率88次/分", "肌酐132μmol/L", "随访6个月",
           "孕32周", "高血压病史10年", "黄疸3天", "患者于2天前出现发热", "常感乏力", "血红蛋白98g/L",
           "甘油三酯2.3mmol/L", "高热39.2℃", "布洛芬0.3g必要时", "胸片示右下肺炎", "CT值45HU"],
    "en": ["BP 140/90 mmHg", "temperature 101.3 F", "metformin 500 mg twice daily", "HbA1c 7.8%",
           "ICD-10 E11.9", "for 3 weeks", "a 67-year-old woman", "Parkinson's disease",
           "Graves' disease", "Hodgkin lymphoma", "Bell's palsy", "Cushing's syndrome",
           "WBC 12,500/mm3", "platelets 150000/uL", "potassium 3.2 mEq/L", "lisinopril 10 mg daily",
           "Addison's disease", "Crohn's disease", "aspirin 325 mg", "LDL 130 mg/dL", "GCS 15",
           "pulse 88/min", "ICD-9 250.00", "creatinine 1.4 mg/dL", "aged 45", "SpO2 94%"],
}


def generate(n: int, seed: int = 0):
    """Rows of (lang, text, spans [(start, end, entity)], negatives [(start, end)])."""
    rng = random.Random(seed)
    gens = values(rng)
    for i in range(n):
        lang = "zh" if i % 2 == 0 else "en"
        sep = "" if lang == "zh" else " "
        pieces = []
        if rng.random() >= 0.15:
            entities = list(TEMPLATES[lang])
            for entity in rng.sample(entities, rng.choice((1, 2))):
                pieces.append(("e", entity, rng.choice(TEMPLATES[lang][entity]),
                               gens[lang][entity]()))
        for _ in range(rng.choice((1, 2))):
            pieces.append(("n", None, rng.choice(NEGATIVES[lang]), None))
        rng.shuffle(pieces)
        text, spans, negatives = "", [], []
        for kind, entity, template, value in pieces:
            if text:
                text += sep if lang == "en" else ("，" if not text.endswith(("，", "。", "！", "？")) else "")
            if kind == "e":
                head, tail = template.split("{v}")
                start = len(text) + len(head)
                spans.append((start, start + len(value), entity))
                text += head + value + tail
            else:
                negatives.append((len(text), len(text) + len(template)))
                text += template
        yield lang, text, spans, negatives


# ---- the tools ----------------------------------------------------------------------------
def meddata_tool():
    from meddata.deid import Detector, Redactor

    redactor = Redactor(Detector())

    def run(texts):
        return [redactor.redact(t)[0] for t in texts]

    def spans(texts):
        return [[(f.start, f.end, f.entity) for f in redactor.detector.find(t)] for t in texts]
    return run, spans, None


PRESIDIO_TYPES = {"PERSON": "name", "PHONE_NUMBER": "phone", "US_SSN": "ssn",
                  "EMAIL_ADDRESS": "email", "URL": "url", "IP_ADDRESS": "ip",
                  "CREDIT_CARD": "bank_card", "DATE_TIME": "birth_date"}


def presidio_tool():
    import logging

    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_anonymizer import AnonymizerEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # its e-mail recognizer calls tldextract, which would fetch the public suffix list
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    analyzer = AnalyzerEngine(nlp_engine=NoOpNlpEngine([{"lang_code": "en", "model_name": "none"}]),
                              supported_languages=["en"])
    anonymizer = AnonymizerEngine()

    def run(texts):
        return [anonymizer.anonymize(text=t, analyzer_results=analyzer.analyze(t, language="en")).text
                for t in texts]

    def spans(texts):
        return [[(r.start, r.end, PRESIDIO_TYPES.get(r.entity_type, "other:" + r.entity_type))
                 for r in analyzer.analyze(t, language="en")] for t in texts]
    return run, spans, set(PRESIDIO_TYPES.values())


def dj_tool():
    from data_juicer.ops.mapper.clean_email_mapper import CleanEmailMapper
    from data_juicer.ops.mapper.clean_ip_mapper import CleanIpMapper
    from data_juicer.ops.mapper.clean_links_mapper import CleanLinksMapper

    ops = [("email", CleanEmailMapper()), ("ip", CleanIpMapper()), ("url", CleanLinksMapper())]

    def run(texts):
        batch = {"text": list(texts)}
        for _, op in ops:
            batch = op.process_batched(batch)
        return batch["text"]

    def spans(texts):
        out = []
        for t in texts:
            found, current = [], t
            for entity, op in ops:
                new = op.process_batched({"text": [current]})["text"][0]
                # changed regions, mapped back to the original text through earlier edits
                for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, current, new,
                                                                  autojunk=False).get_opcodes():
                    if tag in ("replace", "delete"):
                        found.append((i1, i2, entity, current))
                current = new
            out.append(_to_original(t, found))
        return out
    return run, spans, {"email", "ip", "url"}


def _to_original(text, found):
    """Regions of successive edits, located in the original text by their removed text."""
    spans, used = [], set()
    for i1, i2, entity, current in found:
        piece = current[i1:i2]
        at = text.find(piece)
        while at in used and at >= 0:
            at = text.find(piece, at + 1)
        if at < 0:
            continue
        used.add(at)
        spans.append((at, at + len(piece), entity))
    return spans


def same(predicted: str, gold: str) -> bool:
    return predicted == gold.removesuffix("_no_context")


def score(rows, predicted, supported):
    tp_pred, n_pred, tp_gold, n_gold = Counter(), Counter(), Counter(), Counter()
    negatives_changed = 0
    for (lang, _, gold, negatives), preds in zip(rows, predicted):
        for s, e, entity in gold:
            n_gold[lang, entity] += 1
            if any(ps < e and pe > s and same(pt, entity) for ps, pe, pt in preds):
                tp_gold[lang, entity] += 1
        for ps, pe, pt in preds:
            n_pred[lang, pt] += 1
            if any(ps < e and pe > s and same(pt, entity) for s, e, entity in gold):
                tp_pred[lang, pt] += 1
        negatives_changed += sum(any(ps < e and pe > s for ps, pe, _ in preds)
                                 for s, e in negatives)
    table = {}
    for key in set(n_gold) | set(n_pred):
        entity = key[1]
        if supported is not None and entity.removesuffix("_no_context") not in supported \
                and not entity.startswith("other"):
            table[key] = (None, None, n_gold[key])
            continue
        p = tp_pred[key] / n_pred[key] if n_pred[key] else None
        r = tp_gold[key] / n_gold[key] if n_gold[key] else None
        table[key] = (p, r, n_gold[key])
    return table, negatives_changed


def timed(run, texts, repeat=1):
    t0 = time.perf_counter()
    for _ in range(repeat):
        run(texts)
    return len(texts) * repeat / (time.perf_counter() - t0)


MEMORY_CODE = """
import sys
sys.path.insert(0, {bench!r})
from deid_bench import generate
from meddata.deid import Detector, Redactor
redactor = Redactor(Detector())
found = n = 0
batch = []
for lang, text, _, _ in generate({rows}, seed=7):
    batch.append(text)
    if len(batch) == 8192:
        found += sum(sum(redactor.redact(t)[1].values()) for t in batch)
        n += len(batch)
        batch = []
found += sum(sum(redactor.redact(t)[1].values()) for t in batch)
n += len(batch)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
result = {{"rows": n, "found": found, "vm_hwm_mb": hwm / 1024}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-rows", type=int, default=20000)
    ap.add_argument("--skip", action="append", default=[], choices=["presidio", "dj"],
                    help="leave a tool out (when it is not installed)")
    args = ap.parse_args()

    rows = list(generate(args.rows, args.seed))
    texts = [r[1] for r in rows]
    n_spans = Counter((r[0], e) for r in rows for _, _, e in r[2])
    print(f"{len(rows)} rows ({sum(r[0] == 'zh' for r in rows)} zh, "
          f"{sum(r[0] == 'en' for r in rows)} en), {sum(n_spans.values())} labeled identifiers, "
          f"{sum(len(r[3]) for r in rows)} clinical negatives")

    tools = {"meddata": meddata_tool}
    if "presidio" not in args.skip:
        tools["presidio"] = presidio_tool
    if "dj" not in args.skip:
        tools["data-juicer"] = dj_tool
    results, speed, negatives = {}, {}, {}
    for name, make in tools.items():
        try:
            run, spans, supported = make()
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); skipped")
            continue
        run(texts[:50])  # warm up (compiles, lazy imports)
        speed[name] = timed(run, texts)
        results[name], negatives[name] = score(rows, spans(texts), supported)

    names = list(results)
    print("\nprecision / recall per language and entity type (n = labeled identifiers)")
    header = f"{'lang':4} {'entity':14} {'n':>5} " + " ".join(f"{n:>15}" for n in names)
    print(header)
    print("-" * len(header))
    keys = sorted({k for t in results.values() for k in t if not k[1].startswith("other")})
    for key in keys:
        cells = []
        for n in names:
            p, r, _ = results[n].get(key, (None, None, 0))
            if p is None and r is None:
                cells.append(f"{'-':>15}")
            else:
                cells.append(f"{'-' if p is None else f'{p:.3f}':>7}/{'-' if r is None else f'{r:.3f}':<7}")
        print(f"{key[0]:4} {key[1]:14} {n_spans[key]:>5} " + " ".join(cells))
    for n in names:
        other = sum(1 for k in results[n] if k[1].startswith("other"))
        extra = {k[1]: v for k, v in results[n].items() if k[1].startswith("other")}
        if other:
            print(f"{n}: predictions of types meddata has no label for: {sorted(extra)}")
    print("\nclinical negatives changed: " + ", ".join(f"{n} {negatives[n]}" for n in names))
    print("rows/s (find and replace, same texts, one process, back to back): "
          + ", ".join(f"{n} {speed[n]:,.0f}" for n in names))
    if "meddata" in speed:
        print("ratios: " + ", ".join(f"meddata/{n} {speed['meddata'] / speed[n]:.1f}x"
                                      for n in names if n != "meddata"))

    bench = str(Path(__file__).resolve().parent)
    print("\nmemory, meddata streaming rows through the redactor (fresh process each):")
    for factor in (1, 5):
        m = measure(MEMORY_CODE.format(bench=bench, rows=args.memory_rows * factor))
        # VmHWM: this process's own peak RSS (ru_maxrss may carry the parent's from before exec)
        print(f"  {m['rows']:>7} rows (generated and redacted): {m['seconds']:.1f} s, "
              f"peak RSS {m['vm_hwm_mb']:.0f} MB")


if __name__ == "__main__":
    main()
